"""REPA (arXiv 2410.06940) as FlexTok's optional training loss (loss.repa_weight): the loss
and grid resize, gradients into the projector and the tapped decoder block only, weight 0 =
off, errors, and smoke training steps with the Inception stand-in teacher."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.configs import flextok as flextok_configs
from jaxtok.nets import teachers
from jaxtok.tokenizers import get_family
from jaxtok.trainers import frozen as frozen_lib
from jaxtok.trainers import losses
from jaxtok.trainers import state as state_lib
from jaxtok.trainers import step as step_lib
from jaxtok.trainers.train import Experiment
from tests.trainers.common import fixed_batches

WIDTH = 24  # Teacher width of the stand-in below (= the model's repa_dim).


class _Teacher(nnx.Module):
  """A small frozen network with the teacher interface: a 3 x 3 patch grid (not the 4 x 4
  decoder grid of FlexTok smoke, so the resize is exercised)."""

  def __init__(self):
    self.conv = nnx.Conv(3, WIDTH, (6, 6), strides=(5, 5), padding="VALID", rngs=nnx.Rngs(7))

  def __call__(self, images):
    fmap = jnp.tanh(self.conv(images))
    b, h, w, c = fmap.shape
    return teachers.TeacherFeatures(jnp.mean(fmap, axis=(1, 2)), fmap.reshape(b, h * w, c))


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_resize_patch_grid_is_torch_bilinear_antialiased():
  torch = pytest.importorskip("torch", reason="reference: torch's antialiased bilinear resize")
  x = np.random.default_rng(0).normal(size=(2, 25, 5)).astype(np.float32)  # 5 x 5 grid
  for side in (2, 3, 4, 8):
    got = np.asarray(losses.resize_patch_grid(jnp.asarray(x), side * side))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(x.reshape(2, 5, 5, 5)).permute(0, 3, 1, 2), size=(side, side),
        mode="bilinear", align_corners=False, antialias=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(got, want.reshape(2, side * side, 5), atol=1e-6)
  np.testing.assert_array_equal(losses.resize_patch_grid(jnp.asarray(x), 25), x)
  with pytest.raises(ValueError, match="num_patches: expected a square"):
    losses.resize_patch_grid(jnp.asarray(x), 12)
  with pytest.raises(ValueError, match="features: expected a square"):
    losses.resize_patch_grid(jnp.zeros((1, 10, 3)), 4)


def test_repa_loss_is_negative_mean_cosine():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(2, 2, 9, 6)).astype(np.float32)
  want = -np.mean(np.sum(_unit(a) * _unit(b), axis=-1))
  assert float(losses.repa_loss(a, b)) == pytest.approx(want, rel=1e-5)
  assert float(losses.repa_loss(a, 3.0 * a)) == pytest.approx(-1.0, abs=1e-6)
  # A 3 x 3 teacher grid against a 2 x 2 projection: compared after the resize.
  c = rng.normal(size=(2, 4, 6)).astype(np.float32)
  t = np.asarray(losses.resize_patch_grid(jnp.asarray(b), 4))
  assert float(losses.repa_loss(c, b)) == pytest.approx(
      -np.mean(np.sum(_unit(c) * _unit(t), axis=-1)), rel=1e-5)
  with pytest.raises(ValueError, match="teacher: expected"):
    losses.repa_loss(a, b[..., :5])
  with pytest.raises(ValueError, match="repa_weight"):
    losses.LossConfig(repa_weight=-0.5).validate()


@pytest.fixture(scope="module")
def setup():
  """FlexTok smoke with 2 decoder blocks and a projector after block 1, the stand-in teacher."""
  cfg = dataclasses.replace(get_family("flextok").variant("smoke"), dec_depth=2, repa_layer=1,
                            repa_width=32, repa_dim=WIDTH)
  model = get_family("flextok").model_class(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = state_lib.split_pure(model)
  tgraph, tparams, tstate = state_lib.split_pure(_Teacher())
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, 16, 16, 3)), jnp.float32)
  return dict(cfg=cfg, model=model, graphdef=graphdef, params=params, rest=rest,
              images=images, frozen={"repa": (tparams, tstate)}, tgraph=tgraph)


def _forward(s, weight, params=None):
  loss = losses.LossConfig(reconstruction_weight=0.0, perceptual_weight=0.0,
                           quantizer_weight=0.0, repa_weight=weight, repa_teacher="stand-in")
  parts = step_lib.StepParts(graphdef=s["graphdef"], tx=None, loss=loss,
                             repa_apply=frozen_lib.frozen_apply(s["tgraph"]) if weight else None)
  return step_lib.forward_losses(parts, s["params"] if params is None else params, s["rest"],
                                 s["images"], jax.random.PRNGKey(3), jnp.zeros((), jnp.int32),
                                 s["frozen"])


def test_repa_term_is_weighted_cosine_and_reaches_projector_and_decoder(setup):
  s = setup
  total, (terms, _, aux, _) = jax.jit(lambda: _forward(s, 0.5))()
  feats = np.asarray(aux["repa_features"])
  assert feats.shape == (4, s["cfg"].num_patches, WIDTH)
  teacher = _Teacher()(s["images"]).patches
  assert teacher.shape[1] == 9 != s["cfg"].num_patches
  target = np.asarray(losses.resize_patch_grid(teacher, s["cfg"].num_patches))
  want = -np.mean(np.sum(_unit(feats) * _unit(target), axis=-1))
  assert np.isfinite(float(terms["repa_loss"]))
  assert float(terms["repa_loss"]) == pytest.approx(0.5 * want, rel=1e-4, abs=1e-6)
  assert float(total) == pytest.approx(float(terms["flow_loss"] + terms["repa_loss"]),
                                       rel=1e-6)

  # The gradient of the REPA term alone: the projector, the tapped block 1 and the patch
  # embedding feeding it get one; block 2 and the velocity head after the tap do not. (At
  # init the adaLN-zero gates are 0, so no gradient reaches the conditions yet.)
  grads = jax.jit(jax.grad(lambda p: _forward(s, 0.5, p)[1][0]["repa_loss"]))(s["params"])
  norm = lambda tree: float(np.sqrt(sum(np.sum(np.square(x))
                                        for x in jax.tree_util.tree_leaves(tree))))
  assert norm(grads["repa_projector"]) > 1e-6
  assert norm(grads["decoder"]["patch_emb"]) > 1e-6
  blocks = grads["decoder"]["transformer"]["blocks"]
  assert norm(jax.tree_util.tree_map(lambda a: a[0], blocks)) > 1e-6
  assert norm(jax.tree_util.tree_map(lambda a: a[1], blocks)) == 0.0
  assert norm(grads["decoder"]["head_proj"]) == 0.0


def test_weight_zero_is_off_and_the_tap_changes_nothing(setup):
  s = setup
  total, (terms, _, aux, _) = jax.jit(lambda: _forward(s, 0.0))()
  assert "repa_loss" not in terms
  assert float(total) == pytest.approx(float(terms["flow_loss"]), rel=1e-6)
  # The velocity through the tapped pass equals the plain decoder pass.
  d = s["model"].decoder
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 16, 16, 3)), jnp.float32)
  t = jnp.asarray([0.3, 0.8], jnp.float32)
  cond = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 32)), jnp.float32)
  v, hidden = d.velocity_and_hidden(x, t, cond, 1)
  np.testing.assert_allclose(v, d(x, t, cond), rtol=1e-5, atol=1e-6)
  first = d.transformer.layer(0)(d.tokens(x, cond), None, None,
                                 **d.block_kwargs(d.time_embedding(t)))
  np.testing.assert_allclose(hidden, first[:, :s["cfg"].num_patches], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="layer: expected 1 <= layer <= 2"):
    d.transformer.with_hidden(d.tokens(x, cond), 3)


def test_repa_network_and_config_errors():
  c = flextok_configs.get_config("smoke")
  assert c.loss.repa_weight == 0 and frozen_lib.repa_network(c, c.model) is None
  c.loss.repa_weight, c.loss.repa_teacher = 0.5, "inception:mixed_2:75"
  with pytest.raises(ValueError, match="repa_weight: expected 0 for a model without"):
    frozen_lib.repa_network(c, c.model)
  r = flextok_configs.get_config("smoke,repa")
  r.loss.repa_teacher = "inception:mixed_5:75"  # 768 wide; the smoke projector gives 288.
  with pytest.raises(ValueError, match="768-wide.*repa_dim=288"):
    frozen_lib.repa_network(r, r.model)
  r.loss.repa_teacher = ""
  with pytest.raises(ValueError, match="repa_teacher: expected a teacher name"):
    frozen_lib.repa_network(r, r.model)
  p = flextok_configs.get_config("variant=d18-d28,repa")  # Teacher weights: the user's.
  assert p.model.repa_layer == 9 and (p.model.repa_width, p.model.repa_dim) == (2048, 768)
  with pytest.raises(ValueError, match="repa_teacher: expected a teacher name"):
    frozen_lib.repa_network(p, p.model)
  with pytest.raises(ValueError, match="repa_layer"):
    dataclasses.replace(r.model, repa_layer=r.model.dec_depth + 1)


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_smoke_repa_run_trains_the_projector():
  """flextok.py:smoke,repa (the real Inception stand-in teacher) for 2 steps on 2 devices."""
  config = flextok_configs.get_config("smoke,repa")
  config.total_steps = 2
  assert config.model.repa_layer == 1 and config.loss.repa_weight == 0.5
  exp = Experiment(config, jax.devices()[:2])
  assert "repa" in exp.frozen
  state = exp.init_state()
  before = jax.device_get(state.params["repa_projector"])
  for batch in fixed_batches(2, batch=config.batch_size, size=config.model.image_size):
    state, metrics = exp.step(state, exp.global_batch(batch))
    m = jax.device_get(metrics)
    assert np.isfinite(m["loss/total_loss"]) and -0.5 <= m["loss/repa_loss"] <= 0.5
    assert m["loss/total_loss"] == pytest.approx(m["loss/flow_loss"] + m["loss/repa_loss"],
                                                 rel=1e-5)
  after = jax.device_get(state.params["repa_projector"])
  moved = [state_lib.path_str(p) for (p, a), b in zip(
      jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before))
      if not np.array_equal(a, b)]
  assert len(moved) == len(jax.tree_util.tree_leaves(after)), moved
