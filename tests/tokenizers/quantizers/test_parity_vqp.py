"""Parity of LFQ, BSQ, residual VQ and SimVQ with vector-quantize-pytorch 1.34.1.

Fixtures: every `.npz` of kind `vqp_quantizers` under tests/fixtures/ and $JAXTOK_EXTRA_FIXTURES
(made by tools/fixtures/vqp_quantizers.py; tests/fixtures/quantizers/README.md §5). Each file
lists its cases in `meta_json` with the library class, constructor and call keywords; settings
absent there take the 1.34.1 defaults below. Ids exact; tolerances those of the README.
"""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.quantizers import LookupFreeQuantizer, ResidualVectorQuantizer, SimVQ
from tests.fixture_files import fixture_params

ROOT = Path(__file__).parents[2] / "fixtures" / "quantizers"

# vector-quantize-pytorch 1.34.1 defaults of the options the fixtures may set.
_LFQ_DEFAULTS = {"codebook_size": None, "num_codebooks": 1, "entropy_loss_weight": 0.1,
                 "commitment_loss_weight": 0.0, "diversity_gamma": 1.0, "spherical": False,
                 "codebook_scale": 1.0}
_LFQ_CALL_DEFAULTS = {"inv_temperature": 100.0}
_VQ_DEFAULTS = {"decay": 0.8, "eps": 1e-5, "commitment_weight": 1.0, "use_cosine_sim": False,
                "shared_codebook": False, "quantize_dropout": False,
                "quantize_dropout_cutoff_index": 0}
_SIMVQ_DEFAULTS = {"rotation_trick": True, "frozen_codebook_dim": None,
                   "input_to_quantize_commit_loss_weight": 0.25, "commitment_weight": 1.0}
_L2NORM_EPS = 1e-6  # lucidrains `l2norm` / `safe_div` floor of VectorQuantize and rotate_to.

_ATOL = {"value": 1e-5, "loss": 2e-6, "grad": 2e-5}


def _merge(defaults, given, what):
  unknown = set(given) - set(defaults) - {"dim"}
  assert not unknown, f"{what}: fixture sets options this test does not map: {unknown}"
  return {**defaults, **given}


def _close(name, got, want, kind):
  np.testing.assert_allclose(np.asarray(got), want, atol=_ATOL[kind], rtol=1e-5, err_msg=name)


def _equal(name, got, want):
  np.testing.assert_array_equal(np.asarray(got), want, err_msg=name)


def _call(m, x):
  """(output, aux, loss) of one quantizer call."""
  out, aux = m(x)
  return out, aux, aux["loss"]


def _grads(module, x, g, call):
  """(out, aux, d/dx, d/dparams) of aux-loss + sum(out * g); `call(m, x) -> (out, aux, loss)`."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)

  @jax.jit
  def run(x, params):
    def total(x, params):
      out, aux, loss = call(nnx.merge(graphdef, params, rest), x)
      return loss + jnp.sum(out * g), (out, aux)
    (t, (out, aux)), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(x, params)
    return t, out, aux, grads

  return run(x, params)


def _check_lfq(f, p, meta):
  c = _merge(_LFQ_DEFAULTS, meta["ctor"], p)
  call = _merge(_LFQ_CALL_DEFAULTS, meta["call"], p)
  q = LookupFreeQuantizer(c["dim"], c["codebook_size"], num_codebooks=c["num_codebooks"],
                          spherical=c["spherical"], codebook_scale=c["codebook_scale"],
                          entropy_loss_weight=c["entropy_loss_weight"],
                          commitment_loss_weight=c["commitment_loss_weight"],
                          diversity_gamma=c["diversity_gamma"],
                          inv_temperature=call["inv_temperature"], rngs=nnx.Rngs(0))
  has_proj = f"{p}project_in_w" in f.files
  assert (q.project_in is not None) == has_proj
  if has_proj:
    q.project_in.kernel[...] = jnp.asarray(f[f"{p}project_in_w"].T)
    q.project_in.bias[...] = jnp.asarray(f[f"{p}project_in_b"])
    q.project_out.kernel[...] = jnp.asarray(f[f"{p}project_out_w"].T)
    q.project_out.bias[...] = jnp.asarray(f[f"{p}project_out_b"])
  x, g = jnp.asarray(f[f"{p}x"]), jnp.asarray(f[f"{p}upstream_grad"])

  total, out, aux, (gx, gp) = _grads(q, x, g, _call)
  _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
  _close(f"{p}quantized_train", out, f[f"{p}quantized_train"], "value")
  _close(f"{p}quantized_eval", aux["codes"], f[f"{p}quantized_eval"], "value")
  _close(f"{p}aux_loss", aux["loss"], f[f"{p}aux_loss"], "loss")
  _close(f"{p}per_sample_entropy", aux["per_sample_entropy"], f[f"{p}per_sample_entropy"],
         "loss")
  _close(f"{p}batch_entropy", aux["batch_entropy"], f[f"{p}batch_entropy"], "loss")
  if c["commitment_loss_weight"]:
    _close(f"{p}commitment", aux["commitment_loss"] / c["commitment_loss_weight"],
           f[f"{p}commitment"], "loss")
  _close(f"{p}total_loss", total, f[f"{p}total_loss"], "grad")
  _close(f"{p}grad_x", gx, f[f"{p}grad_x"], "grad")
  if has_proj:
    _close(f"{p}grad_project_in_w", gp["project_in"]["kernel"][...].T,
           f[f"{p}grad_project_in_w"], "grad")
    _close(f"{p}grad_project_out_w", gp["project_out"]["kernel"][...].T,
           f[f"{p}grad_project_out_w"], "grad")
  looked = nnx.jit(lambda m, i: m.lookup(i))(q, jnp.asarray(f[f"{p}indices"]))
  _close(f"{p}codes_from_indices", looked, f[f"{p}codes_from_indices"], "value")


def _check_rvq(f, p, meta):
  c = _merge({**_VQ_DEFAULTS, "rotation_trick": meta["ctor"]["dim"] > 1,
              "num_quantizers": None, "codebook_size": None}, meta["ctor"], p)
  q = ResidualVectorQuantizer(
      c["codebook_size"], c["dim"], depth=c["num_quantizers"],
      shared_codebook=c["shared_codebook"], quantize_dropout=c["quantize_dropout"],
      dropout_cutoff=c["quantize_dropout_cutoff_index"],
      distance="cosine" if c["use_cosine_sim"] else "l2", beta=c["commitment_weight"],
      update="ema", ema_decay=c["decay"], ema_eps=c["eps"], rotation_trick=c["rotation_trick"],
      norm_eps=_L2NORM_EPS, rngs=nnx.Rngs(0))
  books = f[f"{p}codebooks"]
  assert len(q.layers) == books.shape[0]
  for layer, book in zip(q.layers, books):
    layer.codebook[...] = jnp.asarray(book)
  x, g = jnp.asarray(f[f"{p}x"]), jnp.asarray(f[f"{p}upstream_grad"])
  # Eval mode: plain codes and their sum.
  _, aux = nnx.jit(lambda m, x: m(x))(q, x)
  _equal(f"{p}indices_eval", aux["ids"], f[f"{p}indices_eval"])
  _close(f"{p}quantized_eval", aux["codes"], f[f"{p}quantized_eval"], "value")
  ids = jnp.asarray(f[f"{p}indices_eval"])
  per_depth = nnx.jit(lambda m, i: jnp.stack(
      [m.layer(d).lookup(i[..., d]) for d in range(m.depth)]))(q, ids)
  _close(f"{p}codes_from_indices", per_depth, f[f"{p}codes_from_indices"], "value")
  _close(f"{p}output_from_indices", nnx.jit(lambda m, i: m.lookup(i))(q, ids),
         f[f"{p}output_from_indices"], "value")
  # Train mode with a frozen codebook (the library's freeze_codebook=True): the estimator
  # outputs, per-depth losses and gradients; dropout keeps the fixture's drawn prefix.
  kept = meta["train_layers_kept"]

  def call_fn(m, x):
    out, aux = m(x, depth=kept)
    return out, aux, jnp.sum(aux["layer_losses"])

  total, out, aux, (gx, _) = _grads(q, x, g, call_fn)
  _equal(f"{p}indices_train", aux["ids"], f[f"{p}indices_train"])
  _close(f"{p}quantized_train", out, f[f"{p}quantized_train"], "value")
  _close(f"{p}losses_train", aux["layer_losses"], f[f"{p}losses_train"], "loss")
  _close(f"{p}total_loss", total, f[f"{p}total_loss"], "grad")
  _close(f"{p}grad_x", gx, f[f"{p}grad_x"], "grad")


def _check_simvq(f, p, meta):
  c = _merge({**_SIMVQ_DEFAULTS, "codebook_size": None}, meta["ctor"], p)
  q = SimVQ(c["codebook_size"], c["dim"], frozen_dim=c["frozen_codebook_dim"],
            beta=c["input_to_quantize_commit_loss_weight"],
            commitment_weight=c["commitment_weight"], rotation_trick=c["rotation_trick"],
            rngs=nnx.Rngs(0))
  q.frozen_codebook[...] = jnp.asarray(f[f"{p}frozen_codebook"])
  q.code_transform.kernel[...] = jnp.asarray(f[f"{p}code_transform_w"].T)
  x, g = jnp.asarray(f[f"{p}x"]), jnp.asarray(f[f"{p}upstream_grad"])

  total, out, aux, (gx, gp) = _grads(q, x, g, _call)
  _equal(f"{p}indices", aux["ids"], f[f"{p}indices"])
  _close(f"{p}quantized", out, f[f"{p}quantized"], "value")
  _close(f"{p}commit_loss", aux["loss"], f[f"{p}commit_loss"], "loss")
  _close(f"{p}total_loss", total, f[f"{p}total_loss"], "grad")
  _close(f"{p}grad_x", gx, f[f"{p}grad_x"], "grad")
  _close(f"{p}grad_code_transform_w", gp["code_transform"]["kernel"][...].T,
         f[f"{p}grad_code_transform_w"], "grad")
  looked = nnx.jit(lambda m, i: m.lookup(i))(q, jnp.asarray(f[f"{p}indices"]))
  _close(f"{p}codes_from_indices", looked, f[f"{p}codes_from_indices"], "value")


_CHECKS = {"LFQ": _check_lfq, "ResidualVQ": _check_rvq, "SimVQ": _check_simvq}


def _cases():
  """One test per (file, case): `pytest.param(path, prefix, id="<stem>-<case>")`."""
  out = []
  for param in fixture_params("vqp_quantizers", ROOT):
    (path,) = param.values
    with np.load(path) as f:
      metas = json.loads(str(f["meta_json"]))
    assert metas, f"{path} lists no cases"
    out += [pytest.param(path, p, id=f"{param.id}-{p.rstrip('_')}") for p in metas]
  return out


@pytest.mark.parametrize(("path", "case"), _cases())
def test_vqp_parity(path, case):
  with np.load(path) as f:
    meta = json.loads(str(f["meta_json"]))[case]
    assert meta["class"] in _CHECKS, f"{case}: unknown class {meta['class']!r}"
    _CHECKS[meta["class"]](f, case, meta)
