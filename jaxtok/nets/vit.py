"""ViT vision towers of the released semantic teachers, in Flax NNX: DINOv2 (arXiv 2304.07193)
and CLIP (arXiv 2103.00020), as Hugging Face `transformers` lays them out (`Dinov2Model`,
`CLIPVisionModel`), loaded from the `config.json` + `model.safetensors` a user has on disk.

One pre-LN transformer written once from a `ViTTowerConfig`; `kind` selects what differs
(DINOv2 = `Dinov2Model`, CLIP = `CLIPVisionModel`):

- patch conv: DINOv2 with bias, CLIP without.
- position embedding: bicubic-interpolated to the input's patch grid when it differs from the
  trained one (DINOv2: as HF always does; CLIP: as HF's `interpolate_pos_encoding=True`).
- before the blocks: CLIP's `pre_layrnorm`.
- block: x += ls1 * attn(LN1 x); x += ls2 * mlp(LN2 x); layer scale (ls) in DINOv2 only.
- MLP: fc1 -> act -> fc2 (DINOv2 exact GELU, OpenAI CLIP quick_gelu), or DINOv2's SwiGLU.
- `last_hidden_state`: DINOv2 `layernorm` of every token; CLIP the last block's output.
- `pooler_output`: DINOv2 `last_hidden_state[:, 0]`; CLIP `post_layernorm` of that token.

Images enter NHWC and already normalised (`ViTTower.__call__`); resizing and the mean/std
are the teacher's (`jaxtok.nets.teachers.ViTTeacher`). Weight names: the Hugging Face Hub
files' (`facebook/dinov2-small`: `encoder.layer.{i}.attention.attention.query.weight`, ...;
`openai/clip-vit-*`: a whole `CLIPModel`, of which `vision_model.*` is read); the renamed
`transformers` 5 in-memory names (`attention.q_proj`, `mlp.gate_proj`, ...) and the
prefix-free `CLIPVisionModel.save_pretrained` names load too.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.io.safetensors import read_safetensors

KINDS = ("dinov2", "clip")
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"

# `transformers` defaults of the config fields a saved config.json may leave out
# (`Dinov2Config`, `CLIPVisionConfig`).
_HF_DEFAULTS = {
    "dinov2": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
               "mlp_ratio": 4, "hidden_act": "gelu", "layer_norm_eps": 1e-6, "image_size": 224,
               "patch_size": 14, "num_channels": 3, "qkv_bias": True, "layerscale_value": 1.0,
               "use_swiglu_ffn": False},
    "clip": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "num_channels": 3, "image_size": 224, "patch_size": 32,
             "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
}
_MODEL_TYPES = {"dinov2": ("dinov2",), "clip": ("clip_vision_model", "clip")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class ViTTowerConfig:
  """Sizes of a DINOv2 / CLIP vision tower (the `transformers` config fields in brackets).

  Attributes:
    kind: "dinov2" or "clip" (the table in the module docstring).
    width: token width W [hidden_size].
    depth: number of blocks [num_hidden_layers].
    heads: attention heads; W must divide by it [num_attention_heads].
    mlp_dim: MLP hidden width [DINOv2: int(W * mlp_ratio); CLIP: intermediate_size]. For a
      SwiGLU MLP the gate / up width is derived from it as `transformers` does.
    patch_size: square patch side P [patch_size].
    image_size: the training input side; the position table holds (image_size // P)^2 + 1
      entries [image_size].
    layer_norm_eps: every LayerNorm's eps [layer_norm_eps].
    act: MLP activation [hidden_act]: "gelu" (exact erf), "quick_gelu" (x * sigmoid(1.702 x)),
      "gelu_new" / "gelu_pytorch_tanh" (tanh approximation), "relu", "silu".
    swiglu: DINOv2's SwiGLU MLP instead of fc1/act/fc2 [use_swiglu_ffn].
    qkv_bias: biases on the query / key / value projections [qkv_bias; always on in CLIP].
    in_channels: image channels [num_channels].
  """
  kind: str
  width: int
  depth: int
  heads: int
  mlp_dim: int
  patch_size: int
  image_size: int
  layer_norm_eps: float
  act: str
  swiglu: bool = False
  qkv_bias: bool = True
  in_channels: int = 3

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
    for name in ("width", "depth", "heads", "mlp_dim", "patch_size", "image_size",
                 "in_channels"):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if self.width % self.heads:
      raise ValueError(f"heads: expected a divisor of width {self.width}, got {self.heads}")
    if self.image_size < self.patch_size:
      raise ValueError(f"image_size: expected >= patch_size {self.patch_size}, got "
                       f"{self.image_size}")
    if self.act not in ACTIVATIONS:
      raise ValueError(f"act: expected one of {ACTIVATIONS}, got {self.act!r}")
    if self.swiglu and self.kind != "dinov2":
      raise ValueError("swiglu: only DINOv2 towers have a SwiGLU MLP")
    if not self.layer_norm_eps > 0:
      raise ValueError(f"layer_norm_eps: expected > 0, got {self.layer_norm_eps!r}")

  @property
  def grid(self) -> int:
    """Side of the trained position-embedding grid."""
    return self.image_size // self.patch_size

  @property
  def swiglu_dim(self) -> int:
    """SwiGLU gate / up width: two thirds of `mlp_dim`, rounded up to a multiple of 8."""
    return (int(self.mlp_dim * 2 / 3) + 7) // 8 * 8


def _side(value, name: str) -> int:
  """An HF size field (an int, or a square [h, w]) -> int."""
  if isinstance(value, (list, tuple)):
    if len(value) != 2 or value[0] != value[1]:
      raise ValueError(f"{name}: expected a square size, got {value!r}")
    value = value[0]
  return value


def config_from_hf(kind: str, hf: Mapping[str, Any]) -> ViTTowerConfig:
  """A `ViTTowerConfig` from a `transformers` config dict (a whole `CLIPModel` config's
  `vision_config` is used). Missing fields take the `transformers` defaults."""
  if kind not in KINDS:
    raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
  if not isinstance(hf, Mapping):
    raise ValueError(f"hf: expected a config dict, got {type(hf).__name__}")
  if kind == "clip" and isinstance(hf.get("vision_config"), Mapping):
    hf = hf["vision_config"]
  model_type = hf.get("model_type")
  if model_type is not None and model_type not in _MODEL_TYPES[kind]:
    raise ValueError(f"hf: expected a {kind} config (model_type in {_MODEL_TYPES[kind]}), "
                     f"got model_type {model_type!r}")
  c = {**_HF_DEFAULTS[kind], **{k: v for k, v in hf.items() if v is not None}}
  width = c["hidden_size"]
  mlp_dim = int(width * c["mlp_ratio"]) if kind == "dinov2" else c["intermediate_size"]
  return ViTTowerConfig(
      kind=kind, width=width, depth=c["num_hidden_layers"], heads=c["num_attention_heads"],
      mlp_dim=mlp_dim, patch_size=_side(c["patch_size"], "patch_size"),
      image_size=_side(c["image_size"], "image_size"),
      layer_norm_eps=float(c["layer_norm_eps"]), act=c["hidden_act"],
      swiglu=bool(c.get("use_swiglu_ffn", False)), qkv_bias=bool(c.get("qkv_bias", True)),
      in_channels=c["num_channels"])


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
  """The `config.json` of a Hugging Face model directory (or the file itself)."""
  p = Path(path)
  file = p / CONFIG_FILE if p.is_dir() else p
  if not file.is_file():
    raise ValueError(f"path: expected a Hugging Face model directory holding {CONFIG_FILE} "
                     f"(and {WEIGHTS_FILE}), got {os.fspath(path)!r} (no {file})")
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"path: {os.fspath(file)!r} is not valid JSON: {e}") from e


# ---------------------------------------------------------------------------------------------
# PyTorch's bicubic resampling (position-embedding interpolation, bicubic image resize).
# ---------------------------------------------------------------------------------------------
def bicubic_matrix(in_size: int, out_size: int, a: float = -0.75) -> np.ndarray:
  """`[out, in]` float32 weights of PyTorch's `interpolate(mode="bicubic",
  align_corners=False)` along one axis (given a size, no antialias): source coordinate
  (dst + 0.5) * in/out - 0.5, Keys' cubic kernel with a = -0.75, edge taps clamped."""
  scale = in_size / out_size
  src = (np.arange(out_size, dtype=np.float64) + 0.5) * scale - 0.5
  base = np.floor(src)
  t = src - base

  def near(x):  # |x| <= 1
    return ((a + 2) * x - (a + 3)) * x * x + 1

  def far(x):  # 1 < |x| < 2
    return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

  weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)
  taps = np.clip(base[:, None].astype(np.int64) + np.arange(-1, 3)[None], 0, in_size - 1)
  mat = np.zeros((out_size, in_size), np.float64)
  np.add.at(mat, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
  return mat.astype(np.float32)


def resize_grid(x: jax.Array, out_h: int, out_w: int, *,
                precision=jax.lax.Precision.HIGHEST) -> jax.Array:
  """`[..., H, W, C]` -> `[..., out_h, out_w, C]` by PyTorch's bicubic (`bicubic_matrix`)."""
  h, w = x.shape[-3], x.shape[-2]
  if h != out_h:
    x = jnp.einsum("oh,...hwc->...owc", jnp.asarray(bicubic_matrix(h, out_h)), x,
                   precision=precision)
  if w != out_w:
    x = jnp.einsum("ow,...hwc->...hoc", jnp.asarray(bicubic_matrix(w, out_w)), x,
                   precision=precision)
  return x


# ---------------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------------
def _activation(name: str) -> Callable[[jax.Array], jax.Array]:
  if name == "gelu":
    return lambda x: jax.nn.gelu(x, approximate=False)
  if name == "quick_gelu":  # OpenAI CLIP's.
    return lambda x: x * jax.nn.sigmoid(1.702 * x)
  if name in ("gelu_new", "gelu_pytorch_tanh"):
    return lambda x: jax.nn.gelu(x, approximate=True)
  return {"relu": jax.nn.relu, "silu": jax.nn.silu}[name]


class Attention(nnx.Module):
  """Multi-head self-attention with separate q / k / v / out projections (scale dh^-1/2)."""

  def __init__(self, cfg: ViTTowerConfig, *, precision, rngs: nnx.Rngs):
    w, kw = cfg.width, dict(precision=precision, rngs=rngs)
    self.heads, self.precision = cfg.heads, precision
    self.query = nnx.Linear(w, w, use_bias=cfg.qkv_bias, **kw)
    self.key = nnx.Linear(w, w, use_bias=cfg.qkv_bias, **kw)
    self.value = nnx.Linear(w, w, use_bias=cfg.qkv_bias, **kw)
    self.out = nnx.Linear(w, w, **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, w = x.shape
    dh = w // self.heads
    q, k, v = (f(x).reshape(b, n, self.heads, dh) for f in (self.query, self.key, self.value))
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, precision=self.precision) * dh ** -0.5
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
    o = jnp.einsum("bhqk,bkhd->bqhd", probs, v, precision=self.precision)
    return self.out(o.reshape(b, n, w))


class MLP(nnx.Module):
  """fc1 -> act -> fc2, or (`swiglu`) down(silu(gate x) * up x)."""

  def __init__(self, cfg: ViTTowerConfig, *, precision, rngs: nnx.Rngs):
    kw = dict(precision=precision, rngs=rngs)
    self.swiglu = cfg.swiglu
    if cfg.swiglu:
      self.gate = nnx.Linear(cfg.width, cfg.swiglu_dim, **kw)
      self.up = nnx.Linear(cfg.width, cfg.swiglu_dim, **kw)
      self.down = nnx.Linear(cfg.swiglu_dim, cfg.width, **kw)
    else:
      self.fc1 = nnx.Linear(cfg.width, cfg.mlp_dim, **kw)
      self.fc2 = nnx.Linear(cfg.mlp_dim, cfg.width, **kw)
    self.act = cfg.act

  def __call__(self, x: jax.Array) -> jax.Array:
    if self.swiglu:
      return self.down(jax.nn.silu(self.gate(x)) * self.up(x))
    return self.fc2(_activation(self.act)(self.fc1(x)))


class Block(nnx.Module):
  """Pre-LN block: x += ls1 * attn(norm1 x); x += ls2 * mlp(norm2 x) (ls: DINOv2 only)."""

  def __init__(self, cfg: ViTTowerConfig, *, precision, rngs: nnx.Rngs):
    ln = dict(epsilon=cfg.layer_norm_eps, rngs=rngs)
    self.norm1 = nnx.LayerNorm(cfg.width, **ln)
    self.attn = Attention(cfg, precision=precision, rngs=rngs)
    self.norm2 = nnx.LayerNorm(cfg.width, **ln)
    self.mlp = MLP(cfg, precision=precision, rngs=rngs)
    if cfg.kind == "dinov2":  # Layer scale (arXiv 2103.17239), 1.0 at init as HF's.
      self.ls1 = nnx.Param(jnp.ones((cfg.width,), jnp.float32))
      self.ls2 = nnx.Param(jnp.ones((cfg.width,), jnp.float32))
    else:
      self.ls1 = self.ls2 = None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.attn(self.norm1(x))
    x = x + (h * self.ls1[...] if self.ls1 is not None else h)
    h = self.mlp(self.norm2(x))
    return x + (h * self.ls2[...] if self.ls2 is not None else h)


class ViTTower(nnx.Module):
  """A DINOv2 / CLIP vision tower (`ViTTowerConfig.kind`); random weights until
  `load_hf_weights` (or `from_pretrained`).

  Args:
    config: the tower's sizes.
    precision: matmul precision ("highest" keeps float32 on TPU / GPU, as parity needs).
    rngs: initialisation randomness.
  """

  def __init__(self, config: ViTTowerConfig, *, precision: str | None = "highest",
               rngs: nnx.Rngs):
    self.config, self.precision = config, precision
    p, w = config.patch_size, config.width
    self.patch_embed = nnx.Conv(config.in_channels, w, (p, p), strides=(p, p), padding="VALID",
                                use_bias=config.kind == "dinov2", precision=precision,
                                rngs=rngs)
    self.cls_token = nnx.Param(0.02 * jax.random.normal(rngs.params(), (w,), jnp.float32))
    self.pos_embed = nnx.Param(0.02 * jax.random.normal(
        rngs.params(), (config.grid ** 2 + 1, w), jnp.float32))
    ln = dict(epsilon=config.layer_norm_eps, rngs=rngs)
    self.pre_norm = nnx.LayerNorm(w, **ln) if config.kind == "clip" else None
    self.blocks = nnx.List([Block(config, precision=precision, rngs=rngs)
                            for _ in range(config.depth)])
    # DINOv2's `layernorm` (every token) / CLIP's `post_layernorm` (the pooled CLS only).
    self.norm = nnx.LayerNorm(w, **ln)

  def position_embedding(self, gh: int, gw: int) -> jax.Array:
    """`[1 + gh*gw, W]`: the trained table, its patch part bicubic-resized to gh x gw."""
    table = self.pos_embed[...]
    g = self.config.grid
    if (gh, gw) == (g, g):
      return table
    patch = resize_grid(table[1:].reshape(g, g, -1), gh, gw, precision=self.precision)
    return jnp.concatenate([table[:1], patch.reshape(gh * gw, -1)], axis=0)

  def __call__(self, pixels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Normalised images `[B, H, W, C]` float (H, W >= patch size) -> (`last_hidden_state`
    `[B, 1 + N, W]`, `pooler_output` `[B, W]`) as `transformers` defines them for the kind
    (N = (H // P) * (W // P), row-major over the patch grid)."""
    c, p = self.config.in_channels, self.config.patch_size
    if pixels.ndim != 4 or pixels.shape[-1] != c or min(pixels.shape[1:3]) < p:
      raise ValueError(f"pixels: expected [B, H, W, {c}] with H, W >= {p} (NHWC, normalised), "
                       f"got shape {tuple(pixels.shape)}")
    x = self.patch_embed(pixels.astype(jnp.float32))
    b, gh, gw, w = x.shape
    cls = jnp.broadcast_to(self.cls_token[...], (b, 1, w))
    x = jnp.concatenate([cls, x.reshape(b, gh * gw, w)], axis=1)
    x = x + self.position_embedding(gh, gw)[None]
    if self.pre_norm is not None:
      x = self.pre_norm(x)
    for block in self.blocks:
      x = block(x)
    if self.config.kind == "dinov2":
      x = self.norm(x)
      return x, x[:, 0]
    return x, self.norm(x[:, 0])


# ---------------------------------------------------------------------------------------------
# Hugging Face weights.
# ---------------------------------------------------------------------------------------------
# transformers-5 in-memory DINOv2 names -> the Hub files' names (what `save_pretrained` writes).
_DINOV2_RENAMES = (("attention.q_proj.", "attention.attention.query."),
                   ("attention.k_proj.", "attention.attention.key."),
                   ("attention.v_proj.", "attention.attention.value."),
                   ("attention.o_proj.", "attention.output.dense."),
                   ("mlp.down_proj.", "mlp.weights_out."))


# Tensors of the files that no tower parameter takes: DINOv2's masked-pretraining token and
# the position-id buffer older CLIP files hold.
_UNUSED_OK = {"dinov2": {"embeddings.mask_token"}, "clip": {"embeddings.position_ids"}}


def _canonical_names(kind: str, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The tower's tensors under the Hub names, without a model prefix."""
  prefix = "vision_model." if kind == "clip" else "dinov2."
  if any(k.startswith(prefix) for k in tensors):  # A whole CLIPModel / a DINOv2 head model.
    tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
  out = dict(tensors)
  if kind == "dinov2":
    for name in list(out):
      for new, old in _DINOV2_RENAMES:
        if new in name:
          out[name.replace(new, old)] = out.pop(name)
    for name in [n for n in out if ".mlp.gate_proj." in n]:  # Split SwiGLU input -> fused.
      up = name.replace(".mlp.gate_proj.", ".mlp.up_proj.")
      if up in out:
        fused = name.replace(".mlp.gate_proj.", ".mlp.weights_in.")
        out[fused] = np.concatenate([out.pop(name), out.pop(up)], axis=0)
  return out


def _linear(prefix: str, layer: nnx.Linear) -> list:
  items = [(f"{prefix}.weight", layer.kernel, np.transpose)]
  if layer.bias is not None:
    items.append((f"{prefix}.bias", layer.bias, None))
  return items


def _norm(prefix: str, layer: nnx.LayerNorm) -> list:
  return [(f"{prefix}.weight", layer.scale, None), (f"{prefix}.bias", layer.bias, None)]


def _weight_map(tower: ViTTower) -> list[tuple[str, nnx.Param, Any]]:
  """`(Hub name, parameter, transform)` for every parameter of `tower`."""
  conv = lambda t: np.transpose(t, (2, 3, 1, 0))  # (O, I, kh, kw) -> (kh, kw, I, O).
  vec = lambda t: np.reshape(t, -1)  # DINOv2 cls_token [1, 1, W] -> [W].
  table = lambda t: np.reshape(t, (-1, t.shape[-1]))  # DINOv2 [1, 1 + N, W] -> [1 + N, W].
  if tower.config.kind == "dinov2":
    items = [("embeddings.cls_token", tower.cls_token, vec),
             ("embeddings.position_embeddings", tower.pos_embed, table),
             ("embeddings.patch_embeddings.projection.weight", tower.patch_embed.kernel, conv),
             ("embeddings.patch_embeddings.projection.bias", tower.patch_embed.bias, None)]
    for i, blk in enumerate(tower.blocks):
      p = f"encoder.layer.{i}"
      items += _norm(f"{p}.norm1", blk.norm1) + _norm(f"{p}.norm2", blk.norm2)
      for name, layer in (("query", blk.attn.query), ("key", blk.attn.key),
                          ("value", blk.attn.value)):
        items += _linear(f"{p}.attention.attention.{name}", layer)
      items += _linear(f"{p}.attention.output.dense", blk.attn.out)
      items += [(f"{p}.layer_scale1.lambda1", blk.ls1, None),
                (f"{p}.layer_scale2.lambda1", blk.ls2, None)]
      if blk.mlp.swiglu:
        gate, up = blk.mlp.gate, blk.mlp.up
        items += [(f"{p}.mlp.weights_in.weight", (gate.kernel, up.kernel), "fused"),
                  (f"{p}.mlp.weights_in.bias", (gate.bias, up.bias), "fused")]
        items += _linear(f"{p}.mlp.weights_out", blk.mlp.down)
      else:
        items += _linear(f"{p}.mlp.fc1", blk.mlp.fc1) + _linear(f"{p}.mlp.fc2", blk.mlp.fc2)
    return items + _norm("layernorm", tower.norm)
  items = [("embeddings.class_embedding", tower.cls_token, vec),
           ("embeddings.position_embedding.weight", tower.pos_embed, table),
           ("embeddings.patch_embedding.weight", tower.patch_embed.kernel, conv)]
  items += _norm("pre_layrnorm", tower.pre_norm)
  for i, blk in enumerate(tower.blocks):
    p = f"encoder.layers.{i}"
    items += _norm(f"{p}.layer_norm1", blk.norm1) + _norm(f"{p}.layer_norm2", blk.norm2)
    for name, layer in (("q_proj", blk.attn.query), ("k_proj", blk.attn.key),
                        ("v_proj", blk.attn.value), ("out_proj", blk.attn.out)):
      items += _linear(f"{p}.self_attn.{name}", layer)
    items += _linear(f"{p}.mlp.fc1", blk.mlp.fc1) + _linear(f"{p}.mlp.fc2", blk.mlp.fc2)
  return items + _norm("post_layernorm", tower.norm)


def load_hf_weights(tower: ViTTower, tensors: Mapping[str, np.ndarray], *,
                    source: str = "tensors") -> None:
  """Sets every parameter of `tower` from a Hugging Face state dict (in place).

  Args:
    tower: the tower (its config fixes every expected shape).
    tensors: `{name: array}` as `read_safetensors` gives it (Hub, `save_pretrained` or
      transformers-5 in-memory names; a `vision_model.` / `dinov2.` prefix is dropped).
    source: how errors name where the tensors came from (the file).

  Raises:
    ValueError: a tensor the tower needs is missing (its name is given) or has another shape,
      or the file holds tower tensors the config does not use (a config / weights mismatch).
  """
  kind = tower.config.kind
  tensors = _canonical_names(kind, tensors)
  items = _weight_map(tower)
  unused = sorted(set(tensors) - {name for name, _, _ in items} - _UNUSED_OK[kind])
  if unused:  # E.g. a 12-block file under a config.json that says 6 blocks.
    raise ValueError(f"tensors: {source} holds {len(unused)} {kind} tensors that the "
                     f"{tower.config.depth}-block config does not use (e.g. {unused[:3]}); "
                     f"expected the config.json that belongs to these weights")
  for name, param, transform in items:
    if name not in tensors:
      near = sorted(tensors)[:4]
      raise ValueError(f"tensors: {source} has no {kind} tensor {name!r} (a "
                       f"{tower.config.depth}-block {kind} tower needs it; the file holds "
                       f"{len(tensors)} tensors, e.g. {near})")
    value = np.asarray(tensors[name], np.float32)
    if transform == "fused" and value.shape[0] % 2:
      targets = [(param[0], value)]  # Not two halves: the shape check below says so.
    elif transform == "fused":  # DINOv2 SwiGLU `weights_in` = [gate; up] along the outputs.
      halves = np.split(value, 2, axis=0)
      targets = [(p, np.transpose(h) if h.ndim == 2 else h) for p, h in zip(param, halves)]
    else:
      try:
        targets = [(param, transform(value) if transform is not None else value)]
      except ValueError:  # e.g. a conv weight that is not 4-D.
        targets = [(param, value)]
    for p, v in targets:
      want = tuple(p.get_value().shape)  # An array, or a ShapeDtypeStruct (abstract tower).
      if v.shape != want:
        raise ValueError(f"tensors: {source} tensor {name!r} has shape {tensors[name].shape}; "
                         f"the {kind} config expects one that maps to {want}")
      p.set_value(jnp.asarray(v, jnp.float32))


def from_pretrained(kind: str, path: str | os.PathLike, *, precision: str | None = "highest"
                    ) -> ViTTower:
  """A tower from a Hugging Face model directory on disk: `config.json` + `model.safetensors`
  (e.g. a Hub snapshot of `facebook/dinov2-small` or `openai/clip-vit-large-patch14`, or a
  `save_pretrained` directory). Nothing is downloaded."""
  config = config_from_hf(kind, read_hf_config(path))
  weights = Path(path) / WEIGHTS_FILE
  if not weights.is_file():
    raise ValueError(f"path: expected {WEIGHTS_FILE} in {os.fspath(path)!r} (sharded or "
                     f"PyTorch .bin checkpoints are not read: `save_pretrained(..., "
                     f"safe_serialization=True)` writes one safetensors file)")
  # Abstract first (no random initialisation to compute), then every parameter from the file.
  tower = nnx.eval_shape(lambda: ViTTower(config, precision=precision, rngs=nnx.Rngs(0)))
  prefix = "text_model."  # A whole CLIPModel file: its text tower stays on disk.
  tensors = read_safetensors(weights, keep=lambda name: not name.startswith(prefix))
  load_hf_weights(tower, tensors, source=os.fspath(weights))
  left = [path for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(tower))
          if isinstance(leaf, jax.ShapeDtypeStruct)]
  if left:  # A parameter `_weight_map` does not cover: a bug here, not in the file.
    raise ValueError(f"tensors: no Hugging Face name maps to the tower parameters {left}")
  return tower


__all__ = ["ACTIVATIONS", "KINDS", "ViTTower", "ViTTowerConfig", "bicubic_matrix",
           "config_from_hf", "from_pretrained", "load_hf_weights", "read_hf_config",
           "resize_grid"]
