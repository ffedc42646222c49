"""FactorizedVectorQuantizer behaviour beyond the FQGAN parity fixtures."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers.quantizers import FactorizedVectorQuantizer, core


def test_shared_input_concat_ids_stats_and_losses():
  fq = FactorizedVectorQuantizer((32, 16), 12, num_factors=2, code_dim=4,
                                 entropy_loss_weight=0.03, rngs=nnx.Rngs(0))
  z = jax.random.normal(jax.random.key(0), (2, 6, 12))
  @nnx.jit
  def run(m, z):
    zq, aux = m(z, train=True)
    zq0, aux0 = m.quantizers[0](m.projections[0](z))  # sub-quantizer 0 alone
    dis = core.disentanglement_loss([zq[..., :4].reshape(-1, 4), zq[..., 4:].reshape(-1, 4)])
    return zq, aux, m.lookup(aux["ids"]), zq0, aux0["ids"], dis

  zq, aux, looked, zq0, ids0, dis = run(fq, z)
  assert zq.shape == (2, 6, 8) and fq.out_dim == 8
  assert aux["ids"].shape == (2, 6, 2) and aux["ids"].dtype == jnp.int32
  assert int(aux["ids"][..., 1].max()) < 16
  np.testing.assert_allclose(looked, zq, atol=1e-6)
  # Sub-quantizer i only sees projection i.
  np.testing.assert_array_equal(ids0, aux["ids"][..., 0])
  np.testing.assert_allclose(zq0, zq[..., :4], atol=1e-6)
  np.testing.assert_allclose(aux["disentangle_loss"], 0.1 * dis, rtol=1e-5)
  parts = sum(d["loss"] for d in aux["factor_losses"])
  np.testing.assert_allclose(aux["loss"], parts + aux["disentangle_loss"], rtol=1e-6)
  for k in ("usage", "perplexity", "entropy_bits", "dead_codes"):
    assert f"{k}/0" in aux["stats"] and f"{k}/1" in aux["stats"]
  np.testing.assert_allclose(aux["stats"]["dead_codes"],
                             aux["stats"]["dead_codes/0"] + aux["stats"]["dead_codes/1"])
  run = fq.running_stats()
  assert float(run["usage/0"]) > 0 and float(fq.quantizers[1].code_stats[...].sum()) == 12


def test_disentanglement_loss_extremes_and_pair_average():
  a = jnp.asarray([[1.0, 0.0], [0.0, 2.0]])
  np.testing.assert_allclose(core.disentanglement_loss([a, 3 * a]), 1.0, rtol=1e-6)
  b = jnp.asarray([[0.0, 1.0], [5.0, 0.0]])
  np.testing.assert_allclose(core.disentanglement_loss([a, b]), 0.0, atol=1e-7)
  # k = 3: the mean of the three pairwise terms (1, 0, 0).
  np.testing.assert_allclose(core.disentanglement_loss([a, 3 * a, b]), 1.0 / 3, rtol=1e-6)
