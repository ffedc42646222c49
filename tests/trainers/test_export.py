"""Export of every model state, including a VQ with dead-code restart (a typed PRNG key)."""
import jax
import numpy as np
import pytest

import jaxtok
from jaxtok.api import Tokenizer
from jaxtok.trainers.train import Experiment
from tests.trainers.common import fixed_batches, small_config


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_export_with_dead_code_restart_loads_to_identical_tokens(tmp_path):
  config = small_config()
  config.model.quantizer_kwargs = {"dead_code_threshold": 1.0}
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  def restart_stream(tree):  # {path: value} of the restart PRNG stream (key and count).
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(tree)
            if "restart" in jax.tree_util.keystr(p)}
  before = restart_stream(state.model_state)
  assert any(jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) for x in before.values()), (
      "restart on: the model state holds the typed restart PRNG key")
  before = {k: np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x) for k, x in before.items()}
  for batch in fixed_batches(3):
    state, _ = exp.step(state, exp.global_batch(batch))
  counts = {k: np.asarray(x) for k, x in restart_stream(state.model_state).items()
            if not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)}
  assert any(not np.array_equal(v, before[k]) for k, v in counts.items()), "no restart drew"

  model = exp.export_model(state)
  path = jaxtok.save(model, tmp_path / "export", family=config.family)
  loaded = jaxtok.load(path)
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
  want = Tokenizer(model, family=config.family).encode(images)
  np.testing.assert_array_equal(loaded.encode(images), want)
  np.testing.assert_array_equal(loaded.decode(want), Tokenizer(model).decode(want))
