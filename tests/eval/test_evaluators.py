"""The evaluator contract, the EVALUATORS dict, and evaluators on a fake and a real tokenizer."""
import numpy as np
import pytest

import jaxtok
from jaxtok import adaptive, metrics
from jaxtok.eval import evaluators
from jaxtok.nets import perceptual
from tests.eval.fakes import BlockTokenizer, make_smooth_images


def test_build_evaluators_groups_recon_metrics():
  evs = evaluators.build_evaluators("psnr,ssim,codebook,mse", batch_size=5)
  assert [type(e) for e in evs] == [evaluators.ReconEvaluator, evaluators.CodebookEvaluator]
  assert evs[0].metrics == ("psnr", "ssim", "mse") and evs[0].batch_size == 5
  fid_ev = evaluators.build_evaluators(["fid"], method="eigh")[0]
  assert isinstance(fid_ev, evaluators.FidEvaluator) and fid_ev.method == "eigh"
  with pytest.raises(ValueError, match="unknown evaluators"):
    evaluators.build_evaluators(["psnr", "bleu"])
  with pytest.raises(ValueError, match=r"unknown evaluators \['rd'\].*python -m jaxtok\.codec rd"):
    evaluators.build_evaluators(["psnr", "rd"])
  with pytest.raises(ValueError, match="lpips_weights"):
    evaluators.build_evaluators(["lpips"])
  # Options no selected evaluator takes are named, never dropped.
  with pytest.raises(ValueError, match=r"\['unused_option'\] are taken by none"):
    evaluators.build_evaluators("psnr,codebook", batch_size=5, unused_option=1)
  with pytest.raises(ValueError, match=r"\['method'\] are taken by none"):
    evaluators.build_evaluators(["psnr"], method="eigh")


def test_evaluators_dict_is_static():
  assert sorted(evaluators.EVALUATORS) == ["codebook", "fid", "recon"]
  assert all(issubclass(c, evaluators.Evaluator) and c.name == n
             for n, c in evaluators.EVALUATORS.items())


def test_recon_evaluator_sums_over_batches(fake_tokenizer, images):
  ev = evaluators.ReconEvaluator(("psnr", "ssim", "mse", "l1"), batch_size=5)
  got = dict(ev.run(fake_tokenizer, images))
  fake = fake_tokenizer.decode(fake_tokenizer.encode(images))
  assert got["num_images"] == 12
  assert got["psnr"] == pytest.approx(float(np.mean(metrics.psnr(images, fake))), rel=1e-5)
  assert got["ssim"] == pytest.approx(float(np.mean(metrics.ssim(images, fake))), rel=1e-5)
  assert got["mse"] == pytest.approx(float(np.mean(metrics.mse(images, fake))), rel=1e-5)
  # Same numbers from an iterable of uneven batches.
  again = dict(ev.run(fake_tokenizer, [images[:3], {"image": images[3:]}]))
  assert again["psnr"] == pytest.approx(got["psnr"], rel=1e-6)
  short = dict(evaluators.ReconEvaluator(("psnr",), prefix=1).run(fake_tokenizer, images))
  assert short["psnr"] < got["psnr"]


def test_codebook_evaluator(fake_tokenizer, images):
  got = dict(evaluators.CodebookEvaluator(batch_size=5).run(fake_tokenizer, images))
  ids = fake_tokenizer.encode(images)
  assert got["num_tokens"] == ids.size
  assert got["dead_codes"] == 16 - len(np.unique(ids))
  assert got["position/usage"].shape == (4,)


def test_fid_evaluator_with_stand_in_features(fake_tokenizer, images):
  feats = lambda x: np.asarray(x, np.float64).reshape(len(x), -1)[:, ::97]
  got = dict(evaluators.FidEvaluator(batch_size=5, extractor=feats, method="eigh").run(
      fake_tokenizer, images))
  assert got["num_images"] == 12 and got["rfid"] > 0


@pytest.mark.slow  # Compiles VGG16 (LPIPS) on CPU.
def test_recon_evaluator_lpips_is_the_adaptive_search_lpips(fake_tokenizer, tmp_path):
  rng = np.random.default_rng(0)
  params = {k: np.abs(rng.standard_normal(s)).astype(np.float32) * 0.05
            for k, s in perceptual.lpips_weight_shapes().items()}
  perceptual.save_lpips_weights(tmp_path / "lpips.npz", params)
  x = make_smooth_images(n=3, size=32)
  tok = BlockTokenizer(image_size=32)
  got = dict(evaluators.ReconEvaluator(("lpips",), lpips_weights=tmp_path / "lpips.npz",
                                       batch_size=2).run(tok, x))
  fake = tok.decode(tok.encode(x))
  want = perceptual.LPIPS.from_file(tmp_path / "lpips.npz")(x / 255.0, fake)
  assert got["lpips"] == pytest.approx(float(np.mean(want)), rel=1e-4)
  # One loader for every LPIPS of jaxtok: the adaptive-length target uses the same network.
  np.testing.assert_allclose(adaptive.lpips([tmp_path / "lpips.npz"])(x, fake), want,
                             rtol=1e-4)


def test_evaluators_on_a_real_one_d_piece_model():
  tok = jaxtok.load("one_d_piece:tiny")
  rng = np.random.default_rng(0)
  data = rng.integers(0, 256, (4, tok.image_size, tok.image_size, 3), dtype=np.uint8)
  results = evaluators.run_evaluators(evaluators.build_evaluators(["psnr", "ssim", "codebook"],
                                                          batch_size=4), tok, data)
  assert results["recon/num_images"] == 4
  assert np.isfinite(results["recon/psnr"]) and -1 <= results["recon/ssim"] <= 1
  assert results["codebook/num_tokens"] == 4 * tok.num_tokens
  assert results["codebook/position/usage"].shape == (tok.num_tokens,)


def test_codebook_evaluator_per_branch_on_a_real_fqgan_model():
  """FQGAN ids `[B, h*w, k]`: usage / perplexity per branch (`config.branches` names), as
  scalars a trainer logs, equal to counting each branch's ids by hand."""
  tok = jaxtok.load("fqgan:smoke")
  data = np.random.default_rng(0).integers(0, 256, (3, tok.image_size, tok.image_size, 3),
                                           dtype=np.uint8)
  results = evaluators.run_evaluators(evaluators.build_evaluators("codebook", batch_size=2),
                                      tok, data)
  ids = tok.encode(data)
  assert ids.shape[-1] == len(tok.config.branches) == 2
  for j, branch in enumerate(tok.config.branches):
    counts = np.bincount(ids[..., j].ravel(), minlength=tok.codebook_size)
    p = counts[counts > 0] / counts.sum()
    assert results[f"codebook/factor/{branch}/usage"] == pytest.approx(
        np.mean(counts > 0))
    assert results[f"codebook/factor/{branch}/perplexity"] == pytest.approx(
        2 ** float(-(p * np.log2(p)).sum()))
    assert np.ndim(results[f"codebook/factor/{branch}/usage"]) == 0
