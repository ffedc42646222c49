"""Rate–distortion curves (`jaxtok.codec.rd`): tokenizer prefixes in `.jtok` files or at the
fixed-length code size vs JPEG/WebP/AVIF, JSON and plot."""
import json

import numpy as np
import pytest
from flax import nnx
from PIL import features

import jaxtok
from jaxtok import codec
from jaxtok.codec import rd
from jaxtok.eval import images as eval_images
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece
from tests.eval.fakes import BlockTokenizer, make_smooth_images


def test_token_bytes_and_lengths():
  fake_tokenizer = BlockTokenizer()
  assert rd.token_bytes(32, 4096) == 32 * 12 / 8
  assert rd.token_bytes(32, 1024, ids_per_token=2) == 32 * 10 * 2 / 8
  assert rd.usable_lengths(fake_tokenizer) == [1, 2, 3, 4]
  fake_tokenizer.supports_prefix = False
  assert rd.usable_lengths(fake_tokenizer) == [4]


def test_curves_json_and_plot(tmp_path):
  fake_tokenizer = BlockTokenizer()
  images = make_smooth_images()
  res = rd.rate_distortion(fake_tokenizer, images, qualities=(10, 50, 90), batch_size=5)
  curves = res["curves"]
  assert set(curves) == {"tokenizer", "jpeg", "webp"}
  tokc = curves["tokenizer"]
  assert [p["tokens"] for p in tokc] == [1, 2, 3, 4]
  assert [p["bytes_per_image"] for p in tokc] == [k * 4 / 8 for k in (1, 2, 3, 4)]
  assert tokc[-1]["psnr"] > tokc[0]["psnr"]  # More tokens, better quality.
  for name in ("jpeg", "webp"):
    pts = curves[name]
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
  dec, size = eval_images.codec_roundtrip(img, "jpeg", 75)
  assert dec.shape == img.shape and 0 < size < 2000
  with pytest.raises(ValueError, match="codec"):
    eval_images.codec_roundtrip(img, "gif", 75)
  many, mean = eval_images.codec_images(np.stack([img, img + 100]), "webp", 50)
  assert many.shape == (2, 32, 32, 3) and mean > 0


def test_with_fid_uses_stand_in_features():
  fake_tokenizer = BlockTokenizer()
  images = make_smooth_images()
  feats = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)[:, ::97]
  res = rd.rate_distortion(fake_tokenizer, images, codecs=("jpeg",), qualities=(50,),
                           with_fid=True, extractor=feats, fid_method="eigh")
  assert all("rfid" in p for c in res["curves"].values() for p in c)


def _odp_tokenizer():
  cfg = TiTokConfig(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32,
                    enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                    num_latent_tokens=3, token_size=4, codebook_size=16, head="pixel",
                    legacy_projection=False, use_l2_norm=False, tail_token_drop=True)
  return jaxtok.Tokenizer(OneDPiece(cfg, rngs=nnx.Rngs(0)))


def test_adaptive_curve_in_jtok_files(monkeypatch):
  tok = _odp_tokenizer()
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
  prior = codec.fit_marginal(tok, [images])
  written = []  # The lengths of every call of the .jtok writer.
  compress_tokens = codec.compress_tokens

  def recording(tok, ids, *, lengths=None, prior="uniform"):
    written.append(np.asarray(lengths).copy())
    return compress_tokens(tok, ids, lengths=lengths, prior=prior)

  monkeypatch.setattr(rd.jtok, "compress_tokens", recording)
  res = rd.rate_distortion(tok, images, codecs=("jpeg",), qualities=(50,), batch_size=4,
                           jtok_priors={"uniform": "uniform", "marginal": prior},
                           adaptive_targets="auto")  # 3 targets
  curves = res["curves"]
  assert set(curves) == {"tokenizer/uniform", "tokenizer/marginal", "adaptive/uniform",
                         "adaptive/marginal", "jpeg"}
  ids = tok.encode(images)
  for name, p in (("uniform", "uniform"), ("marginal", prior)):
    want = [np.mean([len(b) for b in compress_tokens(tok, ids[:, :k], prior=p)])
            for k in (1, 2, 3)]
    assert [q["bytes_per_image"] for q in curves[f"tokenizer/{name}"]] == want
  ada = curves["adaptive/uniform"]
  targets = rd.auto_targets(curves["tokenizer/uniform"])
  assert sorted(p["target"] for p in ada) == sorted(targets)
  for p, q in zip(ada, curves["adaptive/marginal"]):
    assert 1 <= p["mean_tokens"] <= 3 and p["psnr"] == q["psnr"]  # Same images, two priors.
  # One writer call per fixed length and per target, for each of the two priors.
  assert len(written) == 2 * (3 + len(ada))
  pairs = rd.adaptive_vs_fixed(res, "tokenizer/marginal", "adaptive/marginal")
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
  assert tuple(eval_images.CODECS) == rd.DEFAULT_CODECS
  if "avif" in rd.CODECS:
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    dec, size = eval_images.codec_roundtrip(img, "avif", 50)
    assert dec.shape == img.shape and size > 0


def test_lengths_are_checked():
  fake_tokenizer = BlockTokenizer()
  images = make_smooth_images()
  res = rd.rate_distortion(fake_tokenizer, images, lengths=[1, 4], codecs=())
  assert [p["tokens"] for p in res["curves"]["tokenizer"]] == [1, 4]
  for bad in ([0, 2], [5], []):
    with pytest.raises(ValueError, match=r"lengths: expected some of the usable prefix lengths"):
      rd.rate_distortion(fake_tokenizer, images, lengths=bad, codecs=())
  fake_tokenizer.supports_prefix = False
  with pytest.raises(ValueError, match=r"lengths: .* 4\.\.4"):
    rd.rate_distortion(fake_tokenizer, images, lengths=[2], codecs=())
  with pytest.raises(ValueError, match="adaptive_targets: adaptive length needs a prefix"):
    rd.rate_distortion(fake_tokenizer, images, codecs=(), adaptive_targets=[20.0])


def test_fixed_length_rate_of_one_d_piece_prefixes(tmp_path):
  # What `python -m jaxtok.eval --metrics rd` measured before rate-distortion moved here: the
  # fixed-length code size K log2(V) / 8 at chosen prefix lengths, JSON and plot.
  tok = jaxtok.load("one_d_piece:tiny")
  x = make_smooth_images(n=3, size=tok.image_size, seed=1)
  res = rd.rate_distortion(tok, x, lengths=[1, 16, 32], codecs=("jpeg",), qualities=(20, 80),
                           batch_size=3)
  bits = np.log2(tok.codebook_size)
  assert [(p["tokens"], p["bytes_per_image"]) for p in res["curves"]["tokenizer"]] == [
      (k, pytest.approx(k * bits / 8)) for k in (1, 16, 32)]
  assert [p["quality"] for p in sorted(res["curves"]["jpeg"], key=lambda p: p["quality"])] == [
      20, 80]
  rd.write_json(res, tmp_path / "rd.json")
  assert json.loads((tmp_path / "rd.json").read_text())["curves"].keys() == res["curves"].keys()
  assert rd.plot(res, tmp_path / "rd.png").stat().st_size > 1000


def test_byte_budget_adaptive_curve_is_never_below_fixed(tmp_path):
  tok = _odp_tokenizer()
  images = np.random.default_rng(1).integers(0, 256, (6, 16, 16, 3), dtype=np.uint8)
  prior = codec.fit_marginal(tok, [images])
  res = rd.rate_distortion(tok, images, codecs=(), batch_size=4,
                           jtok_priors={"uniform": "uniform", "marginal": prior},
                           adaptive_budgets="auto")
  curves = res["curves"]
  assert set(curves) == {"tokenizer/uniform", "tokenizer/marginal", "adaptive_rd/uniform",
                         "adaptive_rd/marginal"}
  for name in ("uniform", "marginal"):
    rows = rd.rd_adaptive_vs_fixed(res, f"tokenizer/{name}", f"adaptive_rd/{name}")
    assert len(rows) == 3  # one budget per fixed length
    for row in rows:
      assert row["adaptive_bytes"] <= row["budget"] + 1e-9
      assert row["fixed_tokens"] is not None and row["gain_db"] >= -1e-6, row
  # The given budget is what the point spends at most, and the files are real: the point's
  # bytes are the mean size of the .jtok files of the chosen lengths.
  res = rd.rate_distortion(tok, images, codecs=(), jtok_priors={"uniform": "uniform"},
                           adaptive_budgets=[100.0])
  (pt,) = res["curves"]["adaptive_rd/uniform"]
  assert pt["budget"] == 100.0 and pt["bytes_per_image"] <= 100.0
  assert rd.plot(res, tmp_path / "rd.png").exists()
  tok.supports_prefix = False
  with pytest.raises(ValueError, match="adaptive_budgets: adaptive length needs a prefix"):
    rd.rate_distortion(tok, images, codecs=(), lengths=[3], adaptive_budgets="auto")
