"""Rate–distortion curves: tokenizer prefixes vs JPEG/WebP, JSON and plot."""
import json

import numpy as np
import pytest

from jaxtok.eval import rate_distortion as rd


def test_token_bytes_and_lengths(fake_tokenizer):
  assert rd.token_bytes(32, 4096) == 32 * 12 / 8
  assert rd.token_bytes(32, 1024, ids_per_token=2) == 32 * 10 * 2 / 8
  assert rd.usable_lengths(fake_tokenizer) == [1, 2, 3, 4]
  fake_tokenizer.supports_prefix = False
  assert rd.usable_lengths(fake_tokenizer) == [4]


def test_curves_json_and_plot(fake_tokenizer, images, tmp_path):
  res = rd.rate_distortion(fake_tokenizer, images, qualities=(10, 50, 90), batch_size=5)
  curves = res["curves"]
  assert set(curves) == {"tokenizer", "jpeg", "webp"}
  tokc = curves["tokenizer"]
  assert [p["tokens"] for p in tokc] == [1, 2, 3, 4]
  assert [p["bytes_per_image"] for p in tokc] == [k * 4 / 8 for k in (1, 2, 3, 4)]
  assert tokc[-1]["psnr"] > tokc[0]["psnr"]  # More tokens, better quality.
  for codec in ("jpeg", "webp"):
    pts = curves[codec]
    assert len(pts) == 3 and all(p["bytes_per_image"] > 0 for p in pts)
    by_q = sorted(pts, key=lambda p: p["quality"])
    assert by_q[-1]["psnr"] > by_q[0]["psnr"]
  assert "rfid" not in tokc[0]  # 12 images < MIN_FID_IMAGES.
  rd.write_json(res, tmp_path / "rd.json")
  assert json.loads((tmp_path / "rd.json").read_text())["num_images"] == 12
  png = rd.plot(res, tmp_path / "rd.png")
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_codec_roundtrip_sizes():
  img = np.zeros((32, 32, 3), np.uint8)
  dec, size = rd.codec_roundtrip(img, "jpeg", 75)
  assert dec.shape == img.shape and 0 < size < 2000
  with pytest.raises(ValueError, match="codec"):
    rd.codec_roundtrip(img, "gif", 75)


def test_with_fid_uses_stand_in_features(fake_tokenizer, images):
  feats = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)[:, ::97]  # noqa: E731
  res = rd.rate_distortion(fake_tokenizer, images, codecs=("jpeg",), qualities=(50,),
                           with_fid=True, extractor=feats, fid_method="eigh")
  assert all("rfid" in p for c in res["curves"].values() for p in c)
