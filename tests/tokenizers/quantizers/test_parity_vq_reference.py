"""Parity of VectorQuantizer / FiniteScalarQuantizer with lucidrains vector-quantize-pytorch.

Fixtures: every `.npz` of kind `vq_reference` (tests/fixtures/quantizers/README.md §2). Each file
lists its cases in `meta_json`; a file may hold only some of them, so the test iterates over the
listed cases and picks the check from what the case's constructor and call say. Every setting
comes from the file; settings absent from `ctor` take the library defaults of v1.31.0 (README).
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import FiniteScalarQuantizer, VectorQuantizer, core
from jaxtok.tokenizers.quantizers.fsq import fsq_codes_to_ids
from tests.fixture_files import fixture_params

ROOT = Path(__file__).parents[2] / "fixtures" / "quantizers"

# vector-quantize-pytorch v1.31.0 `VectorQuantize` defaults (README §2(a)); rotation_trick
# defaults to True when dim > 1.
_VQP_DEFAULTS = {"decay": 0.8, "eps": 1e-5, "commitment_weight": 1.0, "heads": 1,
                 "codebook_dim": None, "use_cosine_sim": False, "threshold_ema_dead_code": 0,
                 "separate_codebook_per_head": False}
_VQP_L2NORM_EPS = 1e-6  # lucidrains `l2norm` / rotate_to floor.
_KNOWN_KEYS = set(_VQP_DEFAULTS) | {"dim", "codebook_size", "rotation_trick"}


def _vq_from_ctor(ctor: dict) -> VectorQuantizer:
  unknown = set(ctor) - _KNOWN_KEYS
  assert not unknown, f"fixture uses lucidrains options this test does not map: {unknown}"
  c = {**_VQP_DEFAULTS, "rotation_trick": ctor["dim"] > 1, **ctor}
  if c["heads"] > 1:
    assert c["separate_codebook_per_head"], "only separate codebooks per head are mapped"
  return VectorQuantizer(
      c["codebook_size"], c["dim"], code_dim=c["codebook_dim"],
      distance="cosine" if c["use_cosine_sim"] else "l2", beta=c["commitment_weight"],
      update="ema", ema_decay=c["decay"], ema_eps=c["eps"], num_heads=c["heads"],
      rotation_trick=c["rotation_trick"], dead_code_threshold=c["threshold_ema_dead_code"],
      norm_eps=_VQP_L2NORM_EPS, rngs=nnx.Rngs(0))


_lookup = nnx.jit(lambda m, ids: m.lookup(ids))


def _close(name, got, want, atol, rtol=0.0):
  np.testing.assert_allclose(np.asarray(got), want, atol=atol, rtol=rtol, err_msg=name)


def _equal(name, got, want):
  np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)


def _forward_and_grad(vq, x, g):
  """(zq, aux, d(loss + sum(zq * g))/dx) in eval mode (no codebook update: frozen codebook)."""
  graphdef, state = nnx.split(vq)

  @jax.jit
  def run(state, x):
    def total(x):
      out, aux = nnx.merge(graphdef, state)(x, train=False)
      return aux["loss"] + jnp.sum(out * g), (out, aux)
    grad, (out, aux) = jax.grad(total, has_aux=True)(x)
    return out, aux, grad

  return run(state, x)


def _check_train_case(f, p, meta):
  """(a)/(b): eval lookups, distances, STE and rotation-trick outputs, losses and grads."""
  x = jnp.asarray(f[f"{p}x"])
  g = jnp.asarray(f[f"{p}upstream_grad"])
  cosine = bool(meta["ctor"].get("use_cosine_sim", False))
  variants = [("ste", meta["ctor"]), ("rot", meta["ctor_rotation_variant"])]
  for suffix, ctor in variants:
    vq = _vq_from_ctor(ctor)
    assert vq.rotation_trick == (suffix == "rot")
    vq.codebook[...] = jnp.asarray(f[f"{p}codebook"])
    zq, aux, grad = _forward_and_grad(vq, x, g)
    _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
    _close(f"{p}quantize_eval", aux["codes"], f[f"{p}quantize_eval"], 1e-6)
    loss_key = "loss_train" if suffix == "ste" else "loss_train_rot"
    _close(f"{p}{loss_key}", aux["loss"], f[f"{p}{loss_key}"], 1e-6)
    if suffix == "ste":
      _close(f"{p}commit_loss", aux["commitment_loss"], f[f"{p}commit_loss"], 1e-6)
      _close(f"{p}quantize_train_ste", zq, f[f"{p}quantize_train_ste"], 1e-6)
      _close(f"{p}grad_x_ste", grad, f[f"{p}grad_x_ste"], 2e-5)
    else:
      _close(f"{p}quantize_train_rot", zq, f[f"{p}quantize_train_rot"], 5e-6)
      _close(f"{p}grad_x_rot", grad, f[f"{p}grad_x_rot"], 2e-5)
  looked = _lookup(vq, jnp.asarray(f[f"{p}indices"]))
  _close(f"{p}codes_from_indices", looked, f[f"{p}codes_from_indices"], 1e-6)
  _close(f"{p}output_from_indices", looked, f[f"{p}output_from_indices"], 1e-6)
  # Distances from the core: lucidrains reports -sqrt(max(d2, 1e-8)) (Euclidean) or the cosine
  # similarity, which for unit vectors is 1 - d2 / 2.
  @jax.jit
  def distances(x, cb):
    flat = x.reshape(-1, x.shape[-1])
    if cosine:
      flat = core.l2_normalize(flat, _VQP_L2NORM_EPS)
      cb = core.l2_normalize(cb, _VQP_L2NORM_EPS)
    d2 = core.pairwise_sq_distances(flat, cb)
    return 1.0 - d2 / 2.0 if cosine else -jnp.sqrt(jnp.maximum(d2, 1e-8))

  dist = distances(x, jnp.asarray(f[f"{p}codebook"]))
  _close(f"{p}dist", dist.reshape(f[f"{p}dist"].shape), f[f"{p}dist"], 1e-5)


def _check_ema_case(f, p, meta):
  """(c): one EMA step in train mode, with and without dead-code expiry."""
  vq = _vq_from_ctor(meta["ctor"])
  assert not vq.rotation_trick
  vq.codebook[...] = jnp.asarray(f[f"{p}embed_before"])
  vq.cluster_size[...] = jnp.asarray(f[f"{p}cluster_size_before"])[None]
  vq.embed_avg[...] = jnp.asarray(f[f"{p}embed_avg_before"])[None]
  x = jnp.asarray(f[f"{p}x"])
  zq, aux = nnx.jit(lambda m, x: m(x, train=True))(vq, x)
  _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
  _close(f"{p}quantize", zq, f[f"{p}quantize"], 1e-6)
  _close(f"{p}loss", aux["loss"], f[f"{p}loss"], 1e-6)
  cs = np.asarray(vq.cluster_size[...][0])
  ea = np.asarray(vq.embed_avg[...][0])
  cb = np.asarray(vq.codebook[...])
  _close(f"{p}cluster_size_after", cs, f[f"{p}cluster_size_after"], 1e-5)
  want_ea, want_cb = f[f"{p}embed_avg_after"], f[f"{p}embed_after"]
  if f"{p}expired_mask" in f.files:
    expired = f[f"{p}expired_mask"]
    _equal(f"{p}expired_mask", aux["restarted"], expired)
    assert expired.sum() == meta.get("n_expired", expired.sum())
    # Expired rows are NaN in the fixture (RNG-dependent): they must be batch vectors, and
    # embed_avg = that vector * threshold.
    assert np.isnan(want_cb[expired]).all() and not np.isnan(want_cb[~expired]).any()
    flat = np.asarray(x).reshape(-1, x.shape[-1])
    if meta["ctor"].get("use_cosine_sim", False):
      flat = np.asarray(core.l2_normalize(jnp.asarray(flat), _VQP_L2NORM_EPS))
    thr = meta["ctor"]["threshold_ema_dead_code"]
    for row in np.flatnonzero(expired):
      assert np.isclose(flat, cb[row], atol=1e-7).all(-1).any(), f"{p}: row {row} not from batch"
      _close(f"{p}embed_avg_after[{row}]", ea[row], cb[row] * thr, 1e-6)
    keep = ~expired
    _close(f"{p}embed_avg_after", ea[keep], want_ea[keep], 1e-5)
    _close(f"{p}embed_after", cb[keep], want_cb[keep], 1e-5)
  else:
    assert "restarted" not in aux
    _close(f"{p}embed_avg_after", ea, want_ea, 1e-5)
    _close(f"{p}embed_after", cb, want_cb, 1e-5)


def _check_eval_case(f, p, meta):
  """Extras: projections (e_proj_) and heads (f_heads_), eval mode."""
  vq = _vq_from_ctor(meta["ctor"])
  vq.codebook[...] = jnp.asarray(f[f"{p}codebook"]).reshape(vq.codebook[...].shape)
  if f"{p}project_in_w" in f.files:
    assert vq.project_in is not None
    vq.project_in.kernel[...] = jnp.asarray(f[f"{p}project_in_w"].T)
    vq.project_in.bias[...] = jnp.asarray(f[f"{p}project_in_b"])
    vq.project_out.kernel[...] = jnp.asarray(f[f"{p}project_out_w"].T)
    vq.project_out.bias[...] = jnp.asarray(f[f"{p}project_out_b"])
  else:
    assert vq.project_in is None
  zq, aux = nnx.jit(lambda m, x: m(x, train=False))(vq, jnp.asarray(f[f"{p}x"]))
  _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
  _close(f"{p}quantize_eval", aux["codes"], f[f"{p}quantize_eval"], 1e-6)
  _close(f"{p}quantize_eval (STE value)", zq, f[f"{p}quantize_eval"], 1e-5)
  looked = _lookup(vq, jnp.asarray(f[f"{p}indices"]))
  _close(f"{p}lookup", looked, f[f"{p}quantize_eval"], 1e-6)
  if f"{p}codes_from_indices" in f.files:
    _close(f"{p}codes_from_indices", looked, f[f"{p}codes_from_indices"], 1e-6)


def _check_fsq_case(f, p, meta):
  """(d): FSQ codes, ids, level indices, inverse lookup, gradient, implicit codebook."""
  levels = meta["ctor"]["levels"]
  fsq = FiniteScalarQuantizer(levels)
  assert fsq.num_codes == meta["codebook_size"] == int(np.prod(levels))
  _equal(f"{p}levels", np.asarray(levels, np.int32), f[f"{p}levels"])
  _equal(f"{p}basis", fsq.basis, f[f"{p}basis"])
  z = jnp.asarray(f[f"{p}z"])
  g = jnp.asarray(f[f"{p}upstream_grad"])
  graphdef, state = nnx.split(fsq)

  @jax.jit
  def run(z):
    def total(z):
      out, aux = nnx.merge(graphdef, state)(z)
      return jnp.sum(out * g), (out, aux)
    return jax.grad(total, has_aux=True)(z)

  grad, (codes, aux) = run(z)
  _close(f"{p}codes", codes, f[f"{p}codes"], 1e-6)
  _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
  _close(f"{p}grad_z", grad, f[f"{p}grad_z"], 2e-5)
  ids = jnp.asarray(f[f"{p}indices"])

  @nnx.jit
  def inverse(m, ids):
    implicit = m.implicit_codebook()
    return (m.lookup(ids), m.level_indices(ids), implicit,
            fsq_codes_to_ids(implicit, jnp.asarray(m.levels), m.basis))

  from_ids, level_indices, implicit, round_trip = inverse(fsq, ids)
  _close(f"{p}codes_from_indices", from_ids, f[f"{p}codes_from_indices"], 1e-6)
  _equal(f"{p}level_indices", level_indices, f[f"{p}level_indices"])
  _close(f"{p}implicit_codebook", implicit, f[f"{p}implicit_codebook"], 1e-6)
  _equal(f"{p}round trip", round_trip, np.arange(fsq.num_codes))


def _kind(meta):
  ctor = meta["ctor"]
  if "levels" in ctor:
    return _check_fsq_case
  if "ctor_rotation_variant" in meta:
    return _check_train_case
  if "vq.train()" in meta.get("call", ""):
    return _check_ema_case
  if "vq.eval()" in meta.get("call", ""):
    return _check_eval_case
  raise AssertionError(f"unrecognised vq_reference case: {meta}")


@pytest.mark.parametrize("path", fixture_params("vq_reference", ROOT))
def test_vq_reference_parity(path):
  f = np.load(path)
  metas = json.loads(str(f["meta_json"]))
  assert metas, f"{path} lists no cases"
  for p, meta in metas.items():
    _kind(meta)(f, p, meta)
