"""The platform a step is compiled for: "auto" kernels follow it, not the default backend."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtok import parallel
from jaxtok.tokenizers import layers
from jaxtok.tokenizers.quantizers import core


def test_target_platform_defaults_to_the_backend_and_follows_the_scope():
  assert parallel.target_platform() == jax.default_backend() == "cpu"
  with parallel.compiling_for("tpu") as p:
    assert p == "tpu" and parallel.target_platform() == "tpu"
    with parallel.compiling_for("cuda"):  # CUDA / ROCm are "gpu".
      assert parallel.target_platform() == "gpu"
    assert parallel.target_platform() == "tpu"
  assert parallel.target_platform() == "cpu"


def test_compiling_for_a_mesh_and_bad_targets():
  mesh = parallel.make_mesh(parallel.MeshConfig(), jax.devices()[:1])
  assert parallel.mesh_platform(mesh) == "cpu"
  assert not parallel.compile_only(mesh)
  with parallel.compiling_for(mesh):
    assert parallel.target_platform() == "cpu"
  with (pytest.raises(ValueError, match="target: expected a Mesh or one of"),
        parallel.compiling_for("abacus")):
    pass


def test_auto_attention_and_lookup_follow_the_target(monkeypatch):
  calls = []
  real = jax.nn.dot_product_attention

  def spy(*args, **kwargs):
    calls.append(1)
    return real(*args, **kwargs)

  monkeypatch.setattr(jax.nn, "dot_product_attention", spy)
  q = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 2, 4)), jnp.float32)
  # Two function objects: jit caches a trace per function, whatever the scope.
  ref = jax.jit(lambda q: layers.attention(q, q, q))(q)  # CPU default: the chunked kernel.
  assert not calls
  with parallel.compiling_for("tpu"):  # Traced for TPU: jax.nn.dot_product_attention.
    out = jax.jit(lambda q: layers.attention(q, q, q))(q)
  assert calls
  np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
  assert core.resolve_lookup("auto") == "gather"
  with parallel.compiling_for("tpu"):
    assert core.resolve_lookup("auto") == "onehot"


def test_on_platform_scopes_every_trace(monkeypatch):
  seen = []
  step = parallel.on_platform(lambda x: seen.append(parallel.target_platform()) or x * 2, "tpu")
  np.testing.assert_allclose(jax.jit(step)(jnp.ones(3)), 2.0)
  assert seen == ["tpu"] and parallel.target_platform() == "cpu"
