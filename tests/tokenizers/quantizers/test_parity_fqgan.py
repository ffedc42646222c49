"""Parity of FactorizedVectorQuantizer with the official FQGAN dual/triple quantizer.

Fixtures: every `.npz` of kind `fqgan_quantizer` (tests/fixtures/quantizers/README.md §1), every
case (`<P>meta_json`) in it; all settings come from the file. Tolerances are the README's.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import FactorizedVectorQuantizer, core
from tests.fixture_files import fixture_params

ROOT = Path(__file__).parents[2] / "fixtures" / "quantizers"


def _cases(f):
  return [k[:-len("meta_json")] for k in f.files if k.endswith("meta_json")]


def _nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def _build(f, p, meta):
  """FactorizedVectorQuantizer with the fixture's weights; factor order = concat order."""
  order = meta["concat_order"]
  model = FactorizedVectorQuantizer(
      meta["codebook_size"], meta["z_channels"], num_factors=len(order),
      code_dim=meta["codebook_embed_dim"],
      distance="cosine" if meta["l2_norm"] else "l2", beta=meta["commit_loss_beta"],
      entropy_loss_weight=meta["entropy_loss_ratio"],
      entropy_temperature=meta["entropy_temperature"],
      disentangle_weight=meta["disentanglement_ratio"], rngs=nnx.Rngs(0))
  for i, b in enumerate(order):
    w = f[f"{p}conv_w_{b}"][:, :, 0, 0]  # (D, Cz) 1x1 conv == Linear.
    model.projections[i].kernel[...] = jnp.asarray(w.T)
    model.projections[i].bias[...] = jnp.asarray(f[f"{p}conv_b_{b}"])
    model.quantizers[i].codebook[...] = jnp.asarray(f[f"{p}codebook_raw_{b}"])
  return model


def _close(name, got, want, atol, rtol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, atol=atol, rtol=rtol, err_msg=name)


@pytest.mark.parametrize("path", fixture_params("fqgan_quantizer", ROOT))
def test_fqgan_parity(path):
  f = np.load(path)
  cases = _cases(f)
  assert cases, f"{path} lists no cases"
  for p in cases:
    meta = json.loads(str(f[f"{p}meta_json"]))
    order = meta["concat_order"]
    assert sorted(order) == sorted(meta["branch_names"])
    k = meta["codebook_size"]
    model = _build(f, p, meta)
    hs = [_nhwc(f[f"{p}h_{b}"]) for b in order]
    g = _nhwc(f[f"{p}upstream_grad"])

    @nnx.jit
    def forward(m, hs):
      zs = m.project(hs)
      zq, aux = m(hs, train=False)
      cbs = [vq.lookup(jnp.arange(k, dtype=jnp.int32)) for vq in m.quantizers]  # noqa: B023
      # -d of the official entropy loss: squared distance of the normalised vectors.
      neg_ds = [-core.pairwise_sq_distances(core.l2_normalize(z).reshape(-1, z.shape[-1]), cb)
                for z, cb in zip(zs, cbs)]
      return zs, zq, aux, cbs, neg_ds, m.lookup(aux["ids"])

    zs, zq, aux, cbs, neg_ds, from_ids = forward(model, hs)

    # Forward values.
    for i, b in enumerate(order):
      _close(f"{p}z_{b}", _nchw(zs[i]), f[f"{p}z_{b}"], 1e-5)
      np.testing.assert_array_equal(np.asarray(aux["ids"][..., i]), f[f"{p}indices_{b}"],
                                    err_msg=f"{p}indices_{b}")
      _close(f"{p}codebook_normalized_{b}", cbs[i], f[f"{p}codebook_normalized_{b}"], 1e-6)
      _close(f"{p}neg_d_{b}", neg_ds[i], f[f"{p}neg_d_{b}"], 1e-5)
      d = model.code_dim
      _close(f"{p}quant_{b}", _nchw(zq[..., i * d:(i + 1) * d]), f[f"{p}quant_{b}"], 1e-6)
      losses = aux["factor_losses"][i]
      _close(f"{p}vq_loss_{b}", losses["codebook_loss"], f[f"{p}vq_loss_{b}"], 1e-6)
      _close(f"{p}commit_loss_{b}", losses["commitment_loss"], f[f"{p}commit_loss_{b}"], 1e-6)
      _close(f"{p}entropy_loss_{b}", losses["entropy_loss"], f[f"{p}entropy_loss_{b}"], 1e-6)
      # Official usage counts index 0 as used (its buffer starts at zeros); our usage is the
      # plain fraction of codes used, so add 1/K when 0 was not chosen.
      ids_b = np.asarray(aux["ids"][..., i])
      quirk = 0.0 if (ids_b == 0).any() else 1.0 / k
      _close(f"{p}usage_{b}", float(aux["stats"][f"usage/{i}"]) + quirk, f[f"{p}usage_{b}"],
             1e-7)
    _close(f"{p}disentangle_loss", aux["disentangle_loss"], f[f"{p}disentangle_loss"], 1e-6)
    _close(f"{p}concat", _nchw(zq), f[f"{p}concat"], 1e-6)
    _close(f"{p}concat_from_indices", _nchw(from_ids),
           f[f"{p}concat_from_indices"], 1e-6)

    # Total loss and gradients, through the functional API.
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    # Defined and used within this iteration (B023 does not apply).
    def total_from_h(params, hs):
      m = nnx.merge(graphdef, params, rest)  # noqa: B023
      out, a = m(hs, train=False)
      return a["loss"] + jnp.sum(out * g)  # noqa: B023

    def total_from_z(params, zs):
      m = nnx.merge(graphdef, params, rest)  # noqa: B023
      out, a = m.quantize_projected(zs, train=False)
      return a["loss"] + jnp.sum(out * g)  # noqa: B023

    @jax.jit
    def grads(params, hs, zs):
      total, (g_params, g_h) = jax.value_and_grad(total_from_h, argnums=(0, 1))(params, hs)
      return total, g_params, g_h, jax.grad(total_from_z, argnums=1)(params, zs)

    total, g_params, g_h, g_z = grads(params, hs, list(zs))
    _close(f"{p}total_loss", total, f[f"{p}total_loss"], 2e-5, rtol=1e-5)
    for i, b in enumerate(order):
      _close(f"{p}grad_h_{b}", _nchw(g_h[i]), f[f"{p}grad_h_{b}"], 2e-5)
      _close(f"{p}grad_z_{b}", _nchw(g_z[i]), f[f"{p}grad_z_{b}"], 2e-5)
      _close(f"{p}grad_codebook_raw_{b}", g_params["quantizers"][i]["codebook"][...],
             f[f"{p}grad_codebook_raw_{b}"], 2e-5)
