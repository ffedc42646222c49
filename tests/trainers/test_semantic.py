"""FQGAN's semantic-alignment term in the shared train step (loss.semantic_weight)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.configs import fqgan as fqgan_configs
from jaxtok.configs import titok as titok_configs
from jaxtok.nets import teachers
from jaxtok.tokenizers import get_family
from jaxtok.trainers import frozen as frozen_lib
from jaxtok.trainers import losses
from jaxtok.trainers import step as step_lib
from jaxtok.trainers.state import split_pure


class _Teacher(nnx.Module):
  """A small frozen network with the teacher interface (288-wide CLS like inception:mixed_2)."""

  def __init__(self, width: int = 288):
    self.conv = nnx.Conv(3, width, (3, 3), strides=(2, 2), rngs=nnx.Rngs(7))

  def __call__(self, images):
    fmap = jnp.tanh(self.conv(images))
    b, h, w, c = fmap.shape
    return teachers.TeacherFeatures(jnp.mean(fmap, axis=(1, 2)), fmap.reshape(b, h * w, c))


def _infonce_by_hand(pred, teacher):
  s = pred / np.linalg.norm(pred, axis=-1, keepdims=True)
  t = teacher / np.linalg.norm(teacher, axis=-1, keepdims=True)
  logits = s.astype(np.float64) @ t.T.astype(np.float64)
  lse = np.log(np.sum(np.exp(logits), axis=-1))
  return float(np.mean(lse - np.diagonal(logits)))


@pytest.fixture(scope="module")
def setup():
  cfg = get_family("fqgan").variant("smoke")
  model = get_family("fqgan").model_class(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = split_pure(model)
  tgraph, tparams, tstate = split_pure(_Teacher())
  images = jnp.asarray(np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)), jnp.float32)
  frozen = {"semantic": {"sem": (tparams, tstate)}}
  return dict(cfg=cfg, graphdef=graphdef, params=params, rest=rest, images=images,
              frozen=frozen, teacher=(tgraph, tparams, tstate))


def _parts(s, weight, groups=1):
  loss = losses.LossConfig(semantic_weight=weight, semantic_teacher="stand-in",
                           perceptual_weight=0.0)
  apply = (("sem", frozen_lib.frozen_apply(s["teacher"][0])),) if weight else None
  return step_lib.StepParts(graphdef=s["graphdef"], tx=None, loss=loss, semantic_apply=apply,
                            semantic_groups=groups)


def _run(s, groups=1, grad=True):
  """(terms, aux) of `forward_losses` at semantic weight 0.5, and the gradient of the total
  with respect to the feature heads' parameters only (a cheap backward)."""
  parts = _parts(s, 0.5, groups)

  def f(head):
    params = dict(s["params"], feat_heads=head)
    total, (terms, _, aux, _) = step_lib.forward_losses(
        parts, params, s["rest"], s["images"], jax.random.PRNGKey(0),
        jnp.zeros((), jnp.int32), s["frozen"])
    return total, (terms, aux["semantic_features"]["sem"][:, 0])
  head = s["params"]["feat_heads"]
  if grad:
    return jax.jit(jax.value_and_grad(f, has_aux=True))(head)
  return jax.jit(f)(head), None


def _by_hand(s, pred, groups=1):
  pred = np.asarray(pred, np.float32)
  t = np.asarray(_Teacher()(s["images"]).cls, np.float32)
  n = pred.shape[0] // groups
  return np.mean([_infonce_by_hand(pred[i * n:(i + 1) * n], t[i * n:(i + 1) * n])
                  for i in range(groups)])


def test_semantic_term_equals_infonce_and_drives_feature_head(setup):
  s = setup
  (total, (terms, pred)), head_grads = _run(s)
  want = _by_hand(s, pred)
  assert float(terms["semantic_loss_sem"]) == pytest.approx(want, rel=1e-4, abs=1e-5)
  assert float(terms["semantic_loss"]) == pytest.approx(0.5 * want, rel=1e-4, abs=1e-5)
  rest = sum(float(terms[k]) for k in ("reconstruction_loss", "perceptual_loss",
                                       "quantizer_loss"))
  assert float(total) == pytest.approx(rest + 0.5 * want, rel=1e-5)
  assert float(terms["total_loss"]) == pytest.approx(float(total), rel=1e-6)
  # The head feeds only the alignment loss: unwired, its gradient would be exactly zero.
  g = np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(head_grads)])
  assert np.linalg.norm(g) > 1e-6


def test_per_device_negatives_group_the_batch(setup):
  (_, (terms, pred)), _ = _run(setup, groups=2, grad=False)
  want = _by_hand(setup, pred, 2)
  assert float(terms["semantic_loss_sem"]) == pytest.approx(want, rel=1e-4, abs=1e-5)
  assert abs(want - _by_hand(setup, pred, 1)) > 1e-4  # Grouping changes the negatives.


def test_semantic_networks_errors(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # No released teacher cached.
  t = titok_configs.get_config("smoke")
  t.loss.semantic_weight, t.loss.semantic_teacher = 0.5, "inception:mixed_2"
  with pytest.raises(ValueError, match="semantic_weight.*no semantic branch"):
    frozen_lib.semantic_networks(t, t.model)
  f = fqgan_configs.get_config("smoke")
  f.loss.semantic_teacher = "inception:mixed_5"  # 768 wide; the smoke head is 288.
  with pytest.raises(ValueError, match="768-wide.*288"):
    frozen_lib.semantic_networks(f, f.model)
  f.loss.semantic_teacher = ""
  with pytest.raises(ValueError, match="semantic_teacher: expected a teacher name"):
    frozen_lib.semantic_networks(f, f.model)
  f.loss.semantic_teacher = "vis=inception:mixed_2"
  with pytest.raises(ValueError, match="one teacher for each semantic branch"):
    frozen_lib.semantic_networks(f, f.model)
  f.loss.semantic_teacher = "sem=openai/clip-vit-large-patch14"
  with pytest.raises(ValueError, match="1024-wide"):
    frozen_lib.semantic_networks(f, f.model)
  f.loss.semantic_weight = 0.0
  assert frozen_lib.semantic_networks(f, f.model) is None
  d = fqgan_configs.get_config("variant=dual-16")  # Released CLIP teacher: not ported yet.
  with pytest.raises(ValueError, match="released teacher.*semantic_weight=0"):
    frozen_lib.semantic_networks(d, d.model)
  with pytest.raises(ValueError, match="semantic_negatives"):
    losses.LossConfig(semantic_negatives="local").validate()
  with pytest.raises(ValueError, match="semantic_weight"):
    losses.LossConfig(semantic_weight=-1.0).validate()


def test_teacher_spec_sizes():
  assert teachers.teacher_width("inception:mixed_2:75") == 288
  assert teachers.teacher_width("inception") == 2048
  with pytest.raises(ValueError, match="input size >= 75"):
    teachers.teacher_width("inception:mixed_2:32")
  with pytest.raises(ValueError, match="unknown Inception block"):
    teachers.teacher_width("inception:mixed_99")


def test_fqgan_configs_set_the_semantic_term():
  c = fqgan_configs.get_config("variant=triple-16")
  assert c.loss.semantic_weight == 0.5
  assert c.loss.semantic_teachers(("sem_mid", "sem_high")) == {
      "sem_mid": "facebook/dinov2-small", "sem_high": "openai/clip-vit-base-patch16"}
  for arg in ("tiny", "smoke"):
    c = fqgan_configs.get_config(arg)
    assert c.loss.semantic_weight == 0.5
    assert teachers.teacher_width(c.loss.semantic_teacher) == c.model.feature_heads["sem"][0]
  assert dataclasses.replace(c.loss).semantic_negatives == "global"
