"""Official PyTorch state dicts -> NNX parameters: the layout transforms and the strict loader.

Shared by every family's converter (`jaxtok.tokenizers.<family>.convert`). A family writes its
`rules`: `{official_key: (jaxtok path, transform)}` or `(jaxtok path, transform, layer)` for one
layer of a depth-stacked (scanned) parameter; `build_with_params` / `load_params` apply them.

Layout rules (docs/design.md §3): Linear (out, in) -> kernel (in, out) (`linear`); Conv
(O, I, kh, kw) -> (kh, kw, I, O) (`conv`); 1x1 convs used as Dense -> `w[:, :, 0, 0].T`
(`conv1x1_dense`). Loading is strict: an official key with no jaxtok home, a jaxtok parameter
with no official key, or a shape mismatch raises ValueError naming the key.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ParamPath = tuple[Any, ...]
Transform = Callable[[np.ndarray], np.ndarray]
# official key -> (jaxtok path, transform) or (jaxtok path, transform, layer index).
Rule = tuple


def linear(w):  # Linear (out, in) -> (in, out)
  return np.ascontiguousarray(w.T)


def conv(w):  # (O, I, kh, kw) -> (kh, kw, I, O)
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def conv1x1_dense(w):  # (O, I, 1, 1) -> (I, O)
  return np.ascontiguousarray(w[:, :, 0, 0].T)


def same(w):
  return w


def vit_rules(prefix: str, jprefix: ParamPath, depth: int
              ) -> dict[str, tuple[ParamPath, Transform]]:
  """Rules for `{prefix}.ln_pre/ln_post/transformer.{i}...` of one official ViT."""
  rules = {}
  for ln in ("ln_pre", "ln_post"):
    rules[f"{prefix}.{ln}.weight"] = (jprefix + (ln, "scale"), same)
    rules[f"{prefix}.{ln}.bias"] = (jprefix + (ln, "bias"), same)
  for i in range(depth):
    # Blocks are stacked on a leading depth axis in jaxtok (layers.Transformer): rule entries
    # carry the layer index as a third element.
    o = f"{prefix}.transformer.{i}"
    j = jprefix + ("transformer", "blocks")
    for ln in ("ln_1", "ln_2"):
      rules[f"{o}.{ln}.weight"] = (j + (ln, "scale"), same, i)
      rules[f"{o}.{ln}.bias"] = (j + (ln, "bias"), same, i)
    rules[f"{o}.attn.in_proj_weight"] = (j + ("attn", "qkv", "kernel"), linear, i)
    rules[f"{o}.attn.in_proj_bias"] = (j + ("attn", "qkv", "bias"), same, i)
    rules[f"{o}.attn.out_proj.weight"] = (j + ("attn", "out", "kernel"), linear, i)
    rules[f"{o}.attn.out_proj.bias"] = (j + ("attn", "out", "bias"), same, i)
    for lin in ("c_fc", "c_proj"):
      rules[f"{o}.mlp.{lin}.weight"] = (j + ("mlp", lin, "kernel"), linear, i)
      rules[f"{o}.mlp.{lin}.bias"] = (j + ("mlp", lin, "bias"), same, i)
  return rules


def path_str(path: ParamPath) -> str:
  return ".".join(str(p) for p in path)


def official_values(flat: Mapping[ParamPath, Any], params: Mapping[str, np.ndarray],
                    rules: Mapping[str, tuple[ParamPath, Transform]]
                    ) -> dict[ParamPath, np.ndarray]:
  """Applies `rules` to `params`, checking coverage and shapes against `flat` (strict)."""
  params = {k: v for k, v in params.items() if not k.endswith("num_batches_tracked")}
  unknown = sorted(set(params) - set(rules))
  if unknown:
    raise ValueError(f"params: {len(unknown)} official keys have no jaxtok parameter for this "
                     f"config, e.g. {unknown[:5]}")
  missing = sorted(set(rules) - set(params))
  if missing:
    raise ValueError(f"params: {len(missing)} keys the config needs are absent, e.g. "
                     f"{missing[:5]}")
  values = {}
  stacked: dict[ParamPath, dict[int, tuple[str, np.ndarray]]] = {}
  for key, rule in rules.items():
    path, fn = rule[0], rule[1]
    if path not in flat:
      raise ValueError(f"params: {key!r} maps to {path_str(path)}, which the model lacks")
    value = np.asarray(fn(np.asarray(params[key], np.float32)), np.float32)
    want = tuple(flat[path].shape)
    if len(rule) == 3:  # one layer of a depth-stacked parameter
      want = want[1:]
      stacked.setdefault(path, {})[rule[2]] = (key, value)
    if value.shape != want:
      raise ValueError(f"params[{key!r}]: expected shape {want} (jaxtok {path_str(path)}, "
                       f"after layout change), got {value.shape}")
    if len(rule) == 2:
      values[path] = value
  for path, layers_ in stacked.items():
    depth = flat[path].shape[0]
    if sorted(layers_) != list(range(depth)):
      raise ValueError(f"params: {path_str(path)} needs layers 0..{depth - 1}, got "
                       f"{sorted(layers_)}")
    values[path] = np.stack([layers_[i][1] for i in range(depth)])
  uncovered = sorted(path_str(p) for p in set(flat) - set(values))
  if uncovered:
    raise ValueError(f"params: jaxtok parameters with no official key: {uncovered[:5]}")
  return values


def load_params(model: nnx.Module, params: Mapping[str, np.ndarray],
                rules: Mapping[str, tuple[ParamPath, Transform]]) -> nnx.Module:
  """Writes official-layout `params` into an existing `model`'s `nnx.Param`s (in place)."""
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  values = official_values(flat, params, rules)
  nnx.update(model, nnx.from_flat_state(
      [(path, flat[path].replace(jnp.asarray(v))) for path, v in values.items()]))
  return model


def build_with_params(cls, config, params: Mapping[str, np.ndarray],
                      rules_fn: Callable[[Any, Mapping[str, np.ndarray]], dict]) -> nnx.Module:
  """`cls(config)` holding official `params`, without running the random initializers.

  The module is traced abstractly (`nnx.eval_shape`), its parameters are filled from
  `params`, and only its non-parameter state (quantizer statistics) is computed, under jit:
  much faster than an eager random init that is thrown away.
  """
  ctor = lambda: cls(config, rngs=nnx.Rngs(0))
  graphdef, abs_params, abs_rest = nnx.split(nnx.eval_shape(ctor), nnx.Param, ...)
  flat = dict(nnx.to_flat_state(abs_params))
  values = official_values(flat, params, rules_fn(config, params))
  filled = nnx.from_flat_state(
      [(path, flat[path].replace(jnp.asarray(values[path]))) for path in flat])
  if jax.tree_util.tree_leaves(abs_rest):
    rest = jax.jit(lambda: nnx.state(ctor(), nnx.Not(nnx.Param)))()
  else:
    rest = abs_rest
  return nnx.merge(graphdef, filled, rest)


__all__ = ["ParamPath", "Rule", "Transform", "build_with_params", "conv", "conv1x1_dense",
           "linear",
           "load_params", "official_values", "path_str", "same", "vit_rules"]
