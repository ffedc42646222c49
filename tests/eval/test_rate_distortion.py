"""Rate–distortion curves: tokenizer prefixes vs JPEG/WebP, JSON and plot."""
import json

import numpy as np
import pytest
from flax import nnx
from PIL import features

import jaxtok
from jaxtok.eval import rate_distortion as rd
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece


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


def _odp_tokenizer():
  cfg = TiTokConfig(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32,
                    enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                    num_latent_tokens=3, token_size=4, codebook_size=16, head="pixel",
                    legacy_projection=False, use_l2_norm=False, tail_token_drop=True)
  return jaxtok.Tokenizer(OneDPiece(cfg, rngs=nnx.Rngs(0)))


def test_adaptive_curve_and_coders():
  tok = _odp_tokenizer()
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  seen = []

  def coder(ids, lengths):  # Stand-in file writer: 3 bytes a token plus a 10-byte header.
    seen.append(np.asarray(lengths).copy())
    return [b"x" * (10 + 3 * int(n)) for n in lengths]

  res = rd.rate_distortion(tok, images, codecs=("jpeg",), qualities=(50,), batch_size=4,
                           coders={"fake": coder}, adaptive_targets="auto")  # 3 targets
  curves = res["curves"]
  assert set(curves) == {"tokenizer/fake", "adaptive/fake", "jpeg"}
  assert [p["bytes_per_image"] for p in curves["tokenizer/fake"]] == [13, 16, 19]
  ada = curves["adaptive/fake"]
  targets = rd.auto_targets(curves["tokenizer/fake"])
  assert sorted(p["target"] for p in ada) == sorted(targets)
  for p in ada:
    assert p["bytes_per_image"] == pytest.approx(10 + 3 * p["mean_tokens"])
    assert 1 <= p["mean_tokens"] <= 3
  assert len(seen) == 3 + len(ada)  # One call a fixed length and a target.
  pairs = rd.adaptive_vs_fixed(res, "tokenizer/fake", "adaptive/fake")
  assert len(pairs) == len(ada)
  # Without coders: the fixed-length code rate, curves "tokenizer" and "adaptive".
  res = rd.rate_distortion(tok, images, codecs=(), adaptive_targets=[0.0])
  assert res["curves"]["adaptive"][0]["mean_tokens"] == 1.0
  assert res["curves"]["adaptive"][0]["bytes_per_image"] == rd.token_bytes(1, 16)


def test_adaptive_vs_fixed_pairs_shortest_reaching_length():
  fixed = [{"tokens": k, "psnr": psnr, "bytes_per_image": 10.0 * k}
           for k, psnr in ((1, 20.0), (2, 22.0), (3, 21.5), (4, 25.0))]
  adaptive = [{"target": 21.0, "psnr": 21.8, "bytes_per_image": 15.0, "mean_tokens": 1.5},
              {"target": 26.0, "psnr": 26.0, "bytes_per_image": 40.0, "mean_tokens": 4.0}]
  rows = rd.adaptive_vs_fixed({"curves": {"f": fixed, "a": adaptive}}, "f", "a")
  assert rows[0]["fixed_tokens"] == 2 and rows[0]["fixed_bytes"] == 20.0
  assert rows[0]["saving"] == pytest.approx(0.25)
  assert rows[1]["fixed_tokens"] is None and rows[1]["saving"] is None


def test_avif_listed_when_pillow_has_it():
  assert ("avif" in rd.CODECS) == bool(features.check("avif"))
  if "avif" in rd.CODECS:
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    dec, size = rd.codec_roundtrip(img, "avif", 50)
    assert dec.shape == img.shape and size > 0
