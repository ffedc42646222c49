"""FiniteScalarQuantizer: FlexTok's 64,000-code configuration, ids, lookup, projections."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import FiniteScalarQuantizer, core
from jaxtok.tokenizers.quantizers.fsq import DENSE_STATS_MAX
from tests.fixture_files import fixture_params

FIXTURES = Path(__file__).parents[2] / "fixtures"


def test_flextok_levels_give_64000_codes_and_round_trip():
  fsq = FiniteScalarQuantizer()  # FlexTok default levels [8, 8, 8, 5, 5, 5].
  assert fsq.levels == (8, 8, 8, 5, 5, 5) and fsq.num_codes == 64000
  np.testing.assert_array_equal(fsq.basis, [1, 8, 64, 512, 2560, 12800])
  codes = fsq.implicit_codebook()
  assert codes.shape == (64000, 6)
  assert len(np.unique(np.asarray(codes), axis=0)) == 64000
  # Even levels: k/4 for k in -4..3 (no +1); odd: k/2 for k in -2..2.
  np.testing.assert_array_equal(np.unique(np.asarray(codes[:, 0])), np.arange(-4, 4) / 4)
  np.testing.assert_array_equal(np.unique(np.asarray(codes[:, 5])), np.arange(-2, 3) / 2)
  digits = np.asarray(fsq.level_indices(jnp.arange(64000, dtype=jnp.int32)))
  assert digits.shape == (64000, 6)
  np.testing.assert_array_equal(digits @ np.asarray(fsq.basis), np.arange(64000))
  np.testing.assert_array_equal(fsq.lookup(jnp.arange(64000, dtype=jnp.int32)), codes)


def test_ids_dtype_stats_and_projection():
  fsq = FiniteScalarQuantizer([8, 5, 5, 5], dim=16, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(0), (2, 10, 16))
  zq, aux = nnx.jit(lambda m, z: m(z, train=True))(fsq, z)
  assert zq.shape == z.shape and aux["ids"].shape == (2, 10) and aux["ids"].dtype == jnp.int32
  np.testing.assert_allclose(fsq.lookup(aux["ids"]), zq, atol=1e-6)
  n_used = len(np.unique(np.asarray(aux["ids"])))
  np.testing.assert_allclose(aux["stats"]["usage"], n_used / 1000)
  np.testing.assert_allclose(aux["stats"]["dead_codes"], 1000 - n_used)
  assert float(fsq.code_stats[...].sum()) == 20
  assert float(aux["loss"]) == 0.0


@pytest.mark.parametrize("path", fixture_params("flextok", FIXTURES))
def test_flextok_fixture_fsq(path):
  """FlexTok's encoder FSQ (README §4.5 of the flextok fixtures): codes and ids exact."""
  f = np.load(path)
  levels = json.loads(str(f["config/json"]))["levels"]
  fsq = FiniteScalarQuantizer(levels)
  zq, aux = nnx.jit(lambda m, z: m(z))(fsq, jnp.asarray(f["enc/z"]))
  np.testing.assert_array_equal(np.asarray(zq), f["enc/codes"])
  np.testing.assert_array_equal(np.asarray(aux["ids"]), f["enc/ids"])
  np.testing.assert_array_equal(np.asarray(fsq.lookup(jnp.asarray(f["enc/ids"]))), f["enc/codes"])


def test_id_stats_equal_the_histogram_stats():
  """`core.id_stats` (sorted ids) gives `core.code_stats` of the dense histogram."""
  ids = jax.random.randint(jax.random.key(1), (4, 37), 0, 50)  # Many repeats among 50 codes.
  dense = core.code_stats(jnp.zeros((50,)).at[ids.reshape(-1)].add(1.0))
  for k, v in core.id_stats(ids, 50).items():
    np.testing.assert_allclose(v, dense[k], rtol=1e-5, err_msg=k)


def test_large_implicit_codebook_keeps_per_channel_running_stats():
  """Above DENSE_STATS_MAX codes the running counts are per (channel, level); the batch
  statistics stay exact per code."""
  levels = [8] * 8
  fsq = FiniteScalarQuantizer(levels)
  assert fsq.num_codes > DENSE_STATS_MAX and fsq.code_stats[...].shape == (8, 8)
  z = 3 * jax.random.normal(jax.random.key(0), (3, 50, 8))
  _, aux = nnx.jit(lambda m, z: m(z, train=True))(fsq, z)
  ids = np.asarray(aux["ids"]).reshape(-1)
  n_used = len(np.unique(ids))
  np.testing.assert_allclose(aux["stats"]["usage"], n_used / fsq.num_codes)
  np.testing.assert_allclose(aux["stats"]["dead_codes"], fsq.num_codes - n_used)
  digits = (ids[:, None] // np.asarray(fsq.basis)) % 8
  want = np.stack([np.bincount(digits[:, c], minlength=8) for c in range(8)])
  np.testing.assert_array_equal(fsq.code_stats[...], want)
  run = fsq.running_stats()
  np.testing.assert_allclose(run["usage"], np.mean(want > 0))
  # The per-channel entropy sum bounds the batch's code entropy from above.
  assert float(run["entropy_bits"]) >= float(aux["stats"]["entropy_bits"]) - 1e-4
  fsq.reset_stats()
  assert float(fsq.code_stats[...].sum()) == 0
