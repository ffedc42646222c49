"""Official PyTorch state_dict names -> jaxtok NNX state, for TiTok, One-D-Piece and MaskGIT.

Numpy in, no torch needed: `params` is a flat `{official_key: np.ndarray}` (as read from
`model.safetensors` / `pytorch_model.bin` by `jaxtok.io.torch_pickle`).

Layout rules (DESIGN.md §3): Linear (out, in) -> kernel (in, out); Conv (O, I, kh, kw) ->
(kh, kw, I, O); 1x1 convs used as Dense -> `w[:, :, 0, 0].T`; norm weight -> scale; PyTorch's
packed `in_proj_weight` (3W, W) with row blocks [q; k; v] -> fused qkv kernel (W, 3W) = `w.T`.
Key names and semantics: tests/fixtures/titok/README.md §3-4.

Loading is strict: an official key with no jaxtok home, a jaxtok parameter with no official
key, or a shape mismatch raises ValueError naming the key.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.convert.titok_config import official_family, official_titok_config
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig, MaskGITVQGAN
from jaxtok.tokenizers.titok import TiTok, TiTokConfig

Path = tuple[Any, ...]
Transform = Callable[[np.ndarray], np.ndarray]
# official key -> (jaxtok path, transform) or (jaxtok path, transform, layer index).
Rule = tuple


def _t(w):  # Linear (out, in) -> (in, out)
  return np.ascontiguousarray(w.T)


def _conv(w):  # (O, I, kh, kw) -> (kh, kw, I, O)
  return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def _conv1x1_dense(w):  # (O, I, 1, 1) -> (I, O)
  return np.ascontiguousarray(w[:, :, 0, 0].T)


def _same(w):
  return w


def _vit_rules(prefix: str, jprefix: Path, depth: int) -> dict[str, tuple[Path, Transform]]:
  """Rules for `{prefix}.ln_pre/ln_post/transformer.{i}...` of one official ViT."""
  rules = {}
  for ln in ("ln_pre", "ln_post"):
    rules[f"{prefix}.{ln}.weight"] = (jprefix + (ln, "scale"), _same)
    rules[f"{prefix}.{ln}.bias"] = (jprefix + (ln, "bias"), _same)
  for i in range(depth):
    # Blocks are stacked on a leading depth axis in jaxtok (layers.Transformer): rule entries
    # carry the layer index as a third element.
    o = f"{prefix}.transformer.{i}"
    j = jprefix + ("transformer", "blocks")
    for ln in ("ln_1", "ln_2"):
      rules[f"{o}.{ln}.weight"] = (j + (ln, "scale"), _same, i)
      rules[f"{o}.{ln}.bias"] = (j + (ln, "bias"), _same, i)
    rules[f"{o}.attn.in_proj_weight"] = (j + ("attn", "qkv", "kernel"), _t, i)
    rules[f"{o}.attn.in_proj_bias"] = (j + ("attn", "qkv", "bias"), _same, i)
    rules[f"{o}.attn.out_proj.weight"] = (j + ("attn", "out", "kernel"), _t, i)
    rules[f"{o}.attn.out_proj.bias"] = (j + ("attn", "out", "bias"), _same, i)
    for lin in ("c_fc", "c_proj"):
      rules[f"{o}.mlp.{lin}.weight"] = (j + ("mlp", lin, "kernel"), _t, i)
      rules[f"{o}.mlp.{lin}.bias"] = (j + ("mlp", lin, "bias"), _same, i)
  return rules


def _maskgit_rule(key: str, prefix: str, jprefix: Path, ndim: int) -> tuple[Path, Transform]:
  """MaskGIT conv nets keep the official names; only leaves and layouts change."""
  parts = key[len(prefix) + 1:].split(".")
  path = tuple(int(p) if p.isdigit() else p for p in parts[:-1])
  leaf = parts[-1]
  if leaf == "weight" and ndim == 4:
    return jprefix + path + ("kernel",), _conv
  if leaf == "weight" and ndim == 1:
    return jprefix + path + ("scale",), _same
  if leaf == "bias":
    return jprefix + path + ("bias",), _same
  raise ValueError(f"params: unexpected MaskGIT key {key!r} with ndim {ndim}")


def titok_rules(config: TiTokConfig, params: Mapping[str, np.ndarray]
                ) -> dict[str, tuple[Path, Transform]]:
  """official key -> (jaxtok state path, layout transform) for a TiTok / One-D-Piece model."""
  r: dict[str, tuple[Path, Transform]] = {}
  r["latent_tokens"] = (("encoder", "latent_tokens"), _same)
  for side in ("encoder", "decoder"):
    for name in ("class_embedding", "positional_embedding", "latent_token_positional_embedding"):
      r[f"{side}.{name}"] = ((side, name), _same)
  r["encoder.patch_embed.weight"] = (("encoder", "patch_embed", "proj", "kernel"), _conv)
  r["encoder.patch_embed.bias"] = (("encoder", "patch_embed", "proj", "bias"), _same)
  r["encoder.conv_out.weight"] = (("encoder", "conv_out", "kernel"), _conv1x1_dense)
  r["encoder.conv_out.bias"] = (("encoder", "conv_out", "bias"), _same)
  r.update(_vit_rules("encoder", ("encoder",), config.enc_depth))
  r.update(_vit_rules("decoder", ("decoder",), config.dec_depth))
  r["decoder.decoder_embed.weight"] = (("decoder", "decoder_embed", "kernel"), _t)
  r["decoder.decoder_embed.bias"] = (("decoder", "decoder_embed", "bias"), _same)
  r["decoder.mask_token"] = (("decoder", "mask_token"), _same)
  r["decoder.ffn.0.weight"] = (("decoder", "ffn_0", "kernel"), _conv1x1_dense)
  r["decoder.ffn.0.bias"] = (("decoder", "ffn_0", "bias"), _same)
  if config.head == "two_stage":
    r["decoder.ffn.2.weight"] = (("decoder", "ffn_2", "kernel"), _conv1x1_dense)
    r["decoder.ffn.2.bias"] = (("decoder", "ffn_2", "bias"), _same)
    r["pixel_quantize.embedding.weight"] = (("pixel_codebook",), _same)
    for key, value in params.items():
      if key.startswith("pixel_decoder."):
        r[key] = _maskgit_rule(key, "pixel_decoder", ("pixel_decoder",), np.ndim(value))
  else:
    r["decoder.conv_out.weight"] = (("decoder", "conv_out", "kernel"), _conv)
    r["decoder.conv_out.bias"] = (("decoder", "conv_out", "bias"), _same)
  if config.quantizer == "vq":
    r["quantize.embedding.weight"] = (("quantize", "codebook"), _same)
  return r


def maskgit_rules(params: Mapping[str, np.ndarray]) -> dict[str, tuple[Path, Transform]]:
  """official key -> (path, transform) for the standalone MaskGIT VQGAN checkpoint."""
  r = {"quantize.embedding.weight": (("quantize", "codebook"), _same)}
  for key, value in params.items():
    for side in ("encoder", "decoder"):
      if key.startswith(side + "."):
        r[key] = _maskgit_rule(key, side, (side,), np.ndim(value))
  return r


def _path_str(path: Path) -> str:
  return ".".join(str(p) for p in path)


def _official_values(flat: Mapping[Path, Any], params: Mapping[str, np.ndarray],
                     rules: Mapping[str, tuple[Path, Transform]]) -> dict[Path, np.ndarray]:
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
  stacked: dict[Path, dict[int, tuple[str, np.ndarray]]] = {}
  for key, rule in rules.items():
    path, fn = rule[0], rule[1]
    if path not in flat:
      raise ValueError(f"params: {key!r} maps to {_path_str(path)}, which the model lacks")
    value = np.asarray(fn(np.asarray(params[key], np.float32)), np.float32)
    want = tuple(flat[path].shape)
    if len(rule) == 3:  # one layer of a depth-stacked parameter
      want = want[1:]
      stacked.setdefault(path, {})[rule[2]] = (key, value)
    if value.shape != want:
      raise ValueError(f"params[{key!r}]: expected shape {want} (jaxtok {_path_str(path)}, "
                       f"after layout change), got {value.shape}")
    if len(rule) == 2:
      values[path] = value
  for path, layers_ in stacked.items():
    depth = flat[path].shape[0]
    if sorted(layers_) != list(range(depth)):
      raise ValueError(f"params: {_path_str(path)} needs layers 0..{depth - 1}, got "
                       f"{sorted(layers_)}")
    values[path] = np.stack([layers_[i][1] for i in range(depth)])
  uncovered = sorted(_path_str(p) for p in set(flat) - set(values))
  if uncovered:
    raise ValueError(f"params: jaxtok parameters with no official key: {uncovered[:5]}")
  return values


def load_params(model: nnx.Module, params: Mapping[str, np.ndarray],
                rules: Mapping[str, tuple[Path, Transform]]) -> nnx.Module:
  """Writes official-layout `params` into an existing `model`'s `nnx.Param`s (in place)."""
  flat = dict(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  values = _official_values(flat, params, rules)
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
  values = _official_values(flat, params, rules_fn(config, params))
  filled = nnx.from_flat_state(
      [(path, flat[path].replace(jnp.asarray(values[path]))) for path in flat])
  if jax.tree_util.tree_leaves(abs_rest):
    rest = jax.jit(lambda: nnx.state(ctor(), nnx.Not(nnx.Param)))()
  else:
    rest = abs_rest
  return nnx.merge(graphdef, filled, rest)


def from_official(config_dict: Mapping[str, Any] | str,
                  params: Mapping[str, np.ndarray], *,
                  one_d_piece: bool | None = None,
                  size_table: Mapping[str, Mapping[str, int]] | None = None,
                  heads: int | Mapping[str, int] | None = None) -> TiTok:
  """Builds a TiTok / One-D-Piece model from an official config dict and state_dict arrays.

  Args:
    config_dict: the official config (`{"model": {"vq_model": ...}, "dataset": ...}`) or its
      JSON string.
    params: `{official_key: array}` of the official `model.state_dict()`.
    one_d_piece, size_table, heads: see `titok_config.official_titok_config`.

  Returns:
    The family's model (`TiTok` or `OneDPiece`) holding exactly the official weights.
  """
  config = official_titok_config(config_dict, size_table=size_table, heads=heads,
                                 one_d_piece=one_d_piece, params=params)
  family = get_family(official_family(config_dict, one_d_piece))
  return titok_from_params(config, params, model_class=family.model_class)


def titok_from_params(config: TiTokConfig, params: Mapping[str, np.ndarray], *,
                      model_class: type = TiTok) -> TiTok:
  """A `model_class(config)` (TiTok or a subclass) loaded with official-layout `params`."""
  if config.quantizer not in ("vq", "gaussian"):
    raise ValueError(f"config.quantizer: official checkpoints use 'vq' or 'gaussian', got "
                     f"{config.quantizer!r}")
  return build_with_params(model_class, config, params, titok_rules)


def maskgit_from_official(params: Mapping[str, np.ndarray],
                          config: MaskGITConfig | None = None) -> MaskGITVQGAN:
  """`MaskGITVQGAN` from the released `maskgit-vqgan-imagenet-f16-256` state dict."""
  return build_with_params(MaskGITVQGAN, config or MaskGITConfig(), params,
                           lambda _, p: maskgit_rules(p))

