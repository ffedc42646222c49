"""Teacher interface: the FID Inception stand-in gives CLS + patch features of the right width."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.nets import teachers


@pytest.mark.slow  # ~15 s: a random-init FID Inception, eager
def test_inception_teacher_shapes_and_cls_is_patch_mean():
  t = teachers.build_teacher("inception:mixed", rngs=nnx.Rngs(0))
  t.size = 75  # smallest input the stem takes: keeps the test fast.
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 32, 32, 3)), jnp.float32)
  out = t(x)
  assert out.cls.shape == (2, t.width) == (2, teachers.teacher_width("inception:mixed"))
  assert out.patches.shape[0] == 2 and out.patches.shape[-1] == t.width
  np.testing.assert_allclose(np.asarray(out.cls), np.asarray(out.patches.mean(axis=1)),
                             rtol=1e-5, atol=1e-6)
  g = jax.grad(lambda x: jnp.sum(t(x).cls))(x)
  assert not np.any(np.asarray(g))  # frozen: no gradient reaches the images.


def test_teacher_names(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # An empty Hugging Face cache.
  assert teachers.teacher_width("inception") == 2048
  assert teachers.teacher_width("openai/clip-vit-large-patch14") == 1024
  with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
    teachers.build_teacher("facebook/dinov2-small")
  with pytest.raises(ValueError, match="tap"):
    teachers.InceptionTeacher(tap="nope", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="unknown"):
    teachers.teacher_width("bogus")
