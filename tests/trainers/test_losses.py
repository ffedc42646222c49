"""Tests of jaxtok.trainers.losses: known values, float32 math, gradients, jit."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok.trainers import losses as L


def _quantizer_aux(q=0.5, c=0.1, b=0.4):
  return {"losses": {"quantizer": jnp.float32(q)}, "commitment_loss": jnp.float32(c),
          "codebook_loss": jnp.float32(b)}


def test_l1_l2_known_values_and_float32():
  target = jnp.zeros((2, 2, 2, 3))
  pred = jnp.full((2, 2, 2, 3), 0.5).at[0, 0, 0, 0].set(-1.5)
  n = 24
  assert np.isclose(L.l1_loss(target, pred), (23 * 0.5 + 1.5) / n)
  assert np.isclose(L.l2_loss(target, pred), (23 * 0.25 + 2.25) / n)
  out = L.l2_loss(target.astype(jnp.bfloat16), pred.astype(jnp.bfloat16))
  assert out.dtype == jnp.float32
  with pytest.raises(ValueError, match="pred"):
    L.l1_loss(target, pred[:1])


def _np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_proxy_code_cross_entropy_matches_hand_computation():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 3, 3, 7)).astype(np.float32)
  ids = rng.integers(0, 7, size=(2, 3, 3))
  logp = _np_log_softmax(logits.astype(np.float64))
  nll = -np.take_along_axis(logp, ids[..., None], -1)[..., 0]
  got = L.proxy_code_cross_entropy(jnp.asarray(logits), jnp.asarray(ids))
  np.testing.assert_allclose(got, nll.mean(), rtol=1e-5)
  # Label smoothing = cross-entropy against (1 - eps) one_hot + eps / K.
  eps = 0.1
  target = (1 - eps) * np.eye(7)[ids] + eps / 7
  expected = -(target * logp).sum(-1).mean()
  got = L.proxy_code_cross_entropy(jnp.asarray(logits), jnp.asarray(ids), label_smoothing=eps)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # bf16 logits: float32 result; jit and gradients.
  fn = jax.jit(jax.value_and_grad(
      lambda lg: L.proxy_code_cross_entropy(lg, jnp.asarray(ids), label_smoothing=eps)))
  value, grad = fn(jnp.asarray(logits, jnp.bfloat16))
  assert value.dtype == jnp.float32 and np.isfinite(value)
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  with pytest.raises(ValueError, match="target_ids"):
    L.proxy_code_cross_entropy(jnp.asarray(logits), jnp.asarray(ids[:, :2]))
  with pytest.raises(ValueError, match="target_ids"):
    L.proxy_code_cross_entropy(jnp.asarray(logits), jnp.asarray(ids, jnp.float32))
  with pytest.raises(ValueError, match="label_smoothing"):
    L.proxy_code_cross_entropy(jnp.asarray(logits), jnp.asarray(ids), label_smoothing=1.0)


def test_hinge_losses_hand_computed():
  real = jnp.asarray([2.0, 0.5, -1.0])
  fake = jnp.asarray([-2.0, 0.5, 1.0])
  # relu(1 - real) = [0, .5, 2] -> 5/6; relu(1 + fake) = [0, 1.5, 2] -> 7/6.
  assert np.isclose(L.hinge_d_loss(real, fake), 0.5 * (5 / 6 + 7 / 6))
  assert np.isclose(L.hinge_g_loss(fake), 0.5 / 3)  # -mean([-2, .5, 1]).


def test_lecam_loss_and_ema_hand_computed():
  ema = L.LeCamEMA(jnp.float32(0.1), jnp.float32(0.3))
  # relu(0.7 - 0.3)^2 + relu(0.1 - (-0.2))^2 = 0.16 + 0.09.
  assert np.isclose(L.lecam_loss(0.7, -0.2, ema), 0.25)
  assert np.isclose(L.lecam_loss(-1.0, 1.0, ema), 0.0)  # Both hinges inactive.
  new = L.update_lecam_ema(ema, 0.7, -0.2, decay=0.9)
  assert np.isclose(new.real, 0.9 * 0.1 + 0.1 * 0.7)
  assert np.isclose(new.fake, 0.9 * 0.3 + 0.1 * -0.2)
  zeros = L.LeCamEMA.zeros()
  assert float(zeros.real) == 0.0 and float(zeros.fake) == 0.0


def test_discriminator_loss_start_factor_lecam_and_ema():
  cfg = L.LossConfig(gan_start_step=10, lecam_weight=0.5, lecam_ema_decay=0.9,
                     gan_factor=2.0)
  real = jnp.asarray([[2.0, 0.5], [-1.0, 0.5]])  # mean 0.5
  fake = jnp.asarray([[-2.0, 0.5], [1.0, 0.5]])  # mean 0.0
  ema = L.LeCamEMA(jnp.float32(0.1), jnp.float32(0.3))
  hinge = 0.5 * (np.mean([0, 0.5, 2, 0.5]) + np.mean([0, 1.5, 2, 1.5]))
  lecam = 0.5 * (max(0.5 - 0.3, 0) ** 2 + max(0.1 - 0.0, 0) ** 2)
  fn = jax.jit(lambda r, f, e, s: L.discriminator_loss(cfg, r, f, e, step=s))
  loss, terms, new = fn(real, fake, ema, 3)
  assert np.isclose(loss, lecam)  # Before the start step only LeCam (as the reference).
  loss, terms, new = fn(real, fake, ema, 10)
  assert np.isclose(loss, 2.0 * hinge + lecam)
  assert np.isclose(terms["hinge_loss"], hinge) and np.isclose(terms["lecam_loss"], lecam)
  assert np.isclose(terms["logits_real"], 0.5) and np.isclose(terms["logits_fake"], 0.0)
  assert np.isclose(new.real, 0.9 * 0.1 + 0.1 * 0.5)
  assert np.isclose(new.fake, 0.9 * 0.3)
  # Gradient with respect to the logits is finite and pushes real up, fake down.
  g_real, g_fake = jax.grad(lambda r, f: L.discriminator_loss(cfg, r, f, ema, step=10)[0],
                            argnums=(0, 1))(real, fake)
  assert np.all(np.isfinite(g_real)) and float(g_real[0, 1]) < 0 < float(g_fake[0, 1])
  no_lecam = L.LossConfig(lecam_weight=0.0, gan_start_step=0)
  loss, terms, new = L.discriminator_loss(no_lecam, real, fake)
  assert new is None and np.isclose(loss, hinge)
  with pytest.raises(ValueError, match="lecam_ema"):
    L.discriminator_loss(cfg, real, fake, None)


def test_gan_factor():
  f = jax.jit(lambda s: L.gan_factor(s, 5, 0.7))
  assert float(f(4)) == 0.0 and np.isclose(f(5), 0.7)


def test_model_terms_weighted_by_name_and_summed_once():
  cfg = L.LossConfig(quantizer_weight=2.0, kl_weight=1e-3)
  aux = {"losses": {"quantizer": jnp.float32(0.5), "kl": jnp.float32(10.0),
                    "other": jnp.float32(0.25)}, "commitment_loss": jnp.float32(0.1)}
  terms = L.model_terms(cfg, aux)
  assert np.isclose(terms["quantizer_loss"], 1.0) and np.isclose(terms["kl_loss"], 0.01)
  assert np.isclose(terms["other_loss"], 0.25)  # No weight field: weight 1.
  # Logged parts are not summed.
  assert np.isclose(L.total_of(terms), 1.0 + 0.01 + 0.25)
  with pytest.raises(ValueError, match="losses"):
    L.model_terms(cfg, {"quantizer_loss": jnp.float32(1.0)})


def test_generator_loss_sums_weighted_terms_and_gan_start():
  cfg = L.LossConfig(reconstruction_loss="l1", reconstruction_weight=2.0,
                     perceptual_weight=0.5, quantizer_weight=3.0, gan_weight=0.1,
                     gan_start_step=100)
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
  recon = jnp.asarray(rng.uniform(size=(2, 8, 8, 3)), jnp.float32)
  perceptual = lambda a, b: jnp.sum(jnp.square(a - b), axis=(1, 2, 3))  # [B]
  disc = lambda x: jnp.mean(x, axis=-1, keepdims=True) * 2.0 - 0.3
  aux = _quantizer_aux()

  def run(recon, step):
    return L.generator_loss(cfg, images, recon, aux, step=step, perceptual_fn=perceptual,
                            discriminator_fn=disc)

  fn = jax.jit(run)
  rec = np.abs(np.asarray(images) - np.asarray(recon)).mean()
  perc = np.square(np.asarray(images) - np.asarray(recon)).sum((1, 2, 3)).mean()
  g = -(np.asarray(recon).mean(-1) * 2.0 - 0.3).mean()
  total, terms = fn(recon, 99)
  np.testing.assert_allclose(terms["reconstruction_loss"], 2.0 * rec, rtol=1e-5)
  np.testing.assert_allclose(terms["perceptual_loss"], 0.5 * perc, rtol=1e-5)
  np.testing.assert_allclose(terms["quantizer_loss"], 1.5, rtol=1e-6)
  np.testing.assert_allclose(terms["gan_loss"], g, rtol=1e-5)
  assert float(terms["weighted_gan_loss"]) == 0.0 and float(terms["gan_factor"]) == 0.0
  np.testing.assert_allclose(total, 2.0 * rec + 0.5 * perc + 1.5, rtol=1e-5)
  total, terms = fn(recon, 100)
  np.testing.assert_allclose(total, 2.0 * rec + 0.5 * perc + 1.5 + 0.1 * g, rtol=1e-5)
  assert float(terms["commitment_loss"]) == pytest.approx(0.1)
  # Gradients with respect to the reconstruction are finite; bf16 inputs give float32.
  grad = jax.grad(lambda r: run(r, 100)[0])(recon.astype(jnp.bfloat16))
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  assert run(recon.astype(jnp.bfloat16), 0)[0].dtype == jnp.float32


def test_generator_loss_argument_errors():
  images = jnp.zeros((1, 4, 4, 3))
  with pytest.raises(ValueError, match="perceptual_fn"):
    L.generator_loss(L.LossConfig(), images, images, _quantizer_aux())
  with pytest.raises(ValueError, match="discriminator_fn"):
    L.generator_loss(L.LossConfig(perceptual_weight=0.0, gan_weight=0.1), images, images,
                     _quantizer_aux())
  with pytest.raises(ValueError, match="aux"):
    L.generator_loss(L.LossConfig(perceptual_weight=0.0, gan_weight=0.0), images,
                     images, {})
  with pytest.raises(ValueError, match="reconstruction_loss"):
    L.generator_loss(L.LossConfig(reconstruction_loss="l3"), images, images, _quantizer_aux())
  with pytest.raises(ValueError, match="recon"):
    L.generator_loss(L.LossConfig(), images, images[:, :2], _quantizer_aux())
  with pytest.raises(ValueError, match="quantizer_weight"):
    L.LossConfig(quantizer_weight=-1.0).validate()


def test_stage1_loss_and_nonfinite_naming():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(2, 4, 4, 16)), jnp.float32)
  ids = jnp.asarray(rng.integers(0, 16, size=(2, 4, 4)), jnp.int32)
  cfg = L.LossConfig(quantizer_weight=2.0)
  total, terms = jax.jit(lambda lg: L.stage1_loss(cfg, lg, ids, _quantizer_aux()))(logits)
  ce = L.proxy_code_cross_entropy(logits, ids)
  np.testing.assert_allclose(total, ce + 1.0, rtol=1e-6)
  assert L.nonfinite_terms(terms) == []
  bad = dict(terms, quantizer_loss=jnp.float32(np.nan))
  assert L.nonfinite_terms(bad) == ["quantizer_loss"]
  assert L.nonfinite_terms({"a": 1.0, "b": np.array([1.0, np.inf])}) == ["b"]

