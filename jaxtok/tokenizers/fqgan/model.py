"""FQGAN: factorized-codebook VQGAN (arXiv 2411.16681), in Flax NNX.

A 2-D VQGAN whose shared convolutional trunk feeds k branches (Dual: vis, sem; Triple: vis,
sem_mid, sem_high). Each branch has its own `FactorizedAdapter` (a small transformer with
learned position embeddings over the latent grid), GroupNorm / swish / 3x3 conv to
`z_channels`, a 1x1 projection to the code size D and its own cosine codebook (the shared
`FactorizedVectorQuantizer`). The decoder reads the concatenation of the k quantized maps in
branch order through a 1x1 `post_quant_conv`. Semantic branches carry a feature-prediction
head (`FeatPredHead`) whose CLS output is aligned to a frozen teacher's CLS feature with an
in-batch InfoNCE loss (`infonce_cls_loss`).

Ranges: the official model works on images in [-1, 1] ("official range"); jaxtok's public
methods (`encode`, `decode_tokens`, `__call__`) take and return [0, 1] and convert at the
boundary. `forward_official`, `decode_code` and the parts work in the official range.
Everything is NHWC; tokens are row-major over the latent grid, ids `[B, h*w, k]` int32 with
the k ids in `config.branches` order. Semantics: tests/fixtures/fqgan/README.md.
"""
from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.tokenizers import interface, layers
from jaxtok.tokenizers.fqgan.config import FQGANConfig
from jaxtok.tokenizers.interface import TokenSpec
from jaxtok.tokenizers.maskgit_vqgan import AttnBlock, Downsample, ResnetBlock, Upsample
from jaxtok.tokenizers.quantizers import FactorizedVectorQuantizer

__all__ = ["FQGAN", "FQGANConfig", "FQGANDecoder", "FQGANEncoder", "FactorizedAdapter",
           "FeatPredHead", "infonce_cls_loss", "teacher_preprocess",
           "teacher_resize_rows"]

HIGHEST = jax.lax.Precision.HIGHEST
TEACHER_INPUT_SIZE = 224
Capture = MutableMapping[str, jax.Array] | None


def _conv(cin: int, cout: int, k: int, *, rngs: nnx.Rngs) -> nnx.Conv:
  return nnx.Conv(cin, cout, (k, k), padding="SAME", rngs=rngs)


def _put(capture: Capture, name: str, x: jax.Array) -> None:
  if capture is not None:
    capture[name] = x


# ---------------------------------------------------------------------------------------
# Semantic alignment: teacher preprocessing and the InfoNCE loss.
# ---------------------------------------------------------------------------------------
def teacher_resize_rows(in_size: int, out_size: int = TEACHER_INPUT_SIZE) -> np.ndarray:
  """Source row of each output row of PyTorch's legacy 'nearest' resize: floor(dst*in/out)."""
  return (np.arange(out_size) * in_size // out_size).astype(np.int32)


def teacher_preprocess(x: jax.Array, mean: Sequence[float], std: Sequence[float], *,
                       size: int = TEACHER_INPUT_SIZE) -> jax.Array:
  """Official `ScalingLayer`: `[B, H, W, 3]` in [-1, 1] -> `[B, size, size, 3]` normalised.

  u = x/2 + 1/2, nearest resize to size x size (legacy index rule), then (u - mean) / std.
  """
  u = x * 0.5 + 0.5
  rows = jnp.asarray(teacher_resize_rows(x.shape[1], size))
  cols = jnp.asarray(teacher_resize_rows(x.shape[2], size))
  u = u[:, rows][:, :, cols]
  return (u - jnp.asarray(mean, u.dtype)) / jnp.asarray(std, u.dtype)


def infonce_cls_loss(pred: jax.Array, teacher: jax.Array) -> jax.Array:
  """In-batch InfoNCE between predicted and teacher CLS features (official towers).

  Args:
    pred: `[B, W]` predicted CLS features (`FeatPredHead` output token 0).
    teacher: `[B, W]` teacher CLS features (gradient stopped here).

  Returns:
    () float32: -mean_i log softmax_j(<s_i, t_j>)_i with s, t l2-normalised (no eps) and
    temperature 1; the negatives are the other images of the batch (B >= 2).
  """
  if pred.ndim != 2 or teacher.shape != pred.shape:
    raise ValueError(f"teacher: expected shape {tuple(pred.shape)} like pred [B, W], got "
                     f"{tuple(teacher.shape)}")
  if pred.shape[0] < 2:
    raise ValueError(f"pred: InfoNCE needs in-batch negatives, expected B >= 2, got "
                     f"B={pred.shape[0]}")
  s = pred.astype(jnp.float32)
  t = jax.lax.stop_gradient(teacher.astype(jnp.float32))
  s = s / jnp.linalg.norm(s, axis=-1, keepdims=True)
  t = t / jnp.linalg.norm(t, axis=-1, keepdims=True)
  logits = jnp.matmul(s, t.T, precision=HIGHEST)
  return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - jnp.diagonal(logits))


# ---------------------------------------------------------------------------------------
# Transformer parts.
# ---------------------------------------------------------------------------------------
class FactorizedAdapter(nnx.Module):
  """Per-branch transformer over the latent grid: `[B, h, w, C] -> [B, h, w, C]`.

  + `positional_embedding` [h*w, C], `ln_pre`, pre-LN blocks, `ln_post` (official names).
  """

  def __init__(self, grid: int, width: int, depth: int, heads: int, *, mlp_ratio: float,
               unroll: int = 1, rngs: nnx.Rngs):
    self.grid = grid
    self.positional_embedding = layers.normal_param((grid * grid, width), width ** -0.5, rngs)
    self.ln_pre = layers.layer_norm(width, rngs=rngs)
    self.transformer = layers.Transformer(width, depth, heads, mlp_ratio=mlp_ratio,
                                          unroll=unroll, rngs=rngs, init_std=None)
    self.ln_post = layers.layer_norm(width, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    b, h, w, c = x.shape
    t = x.reshape(b, h * w, c) + self.positional_embedding[...]
    t = self.ln_post(self.transformer(self.ln_pre(t)))
    return t.reshape(b, h, w, c)


class FeatPredHead(nnx.Module):
  """Feature-prediction head: quantized branch `[B, h, w, D]` -> `[B, 1 + h*w, W]`.

  Linear(D, W), ReLU, Linear(W, W) (`upscale.0`, `upscale.2`), a prepended
  `class_embedding` [1, W], `positional_embedding` [1 + h*w, W], `ln_pre`, blocks, `ln_post`.
  Token 0 is the CLS prediction.
  """

  def __init__(self, input_dim: int, grid: int, width: int, depth: int, heads: int, *,
               mlp_ratio: float, unroll: int = 1, rngs: nnx.Rngs):
    scale = width ** -0.5
    self.upscale_0 = nnx.Linear(input_dim, width, rngs=rngs)
    self.upscale_2 = nnx.Linear(width, width, rngs=rngs)
    self.class_embedding = layers.normal_param((1, width), scale, rngs)
    self.positional_embedding = layers.normal_param((grid * grid + 1, width), scale, rngs)
    self.ln_pre = layers.layer_norm(width, rngs=rngs)
    self.transformer = layers.Transformer(width, depth, heads, mlp_ratio=mlp_ratio,
                                          unroll=unroll, rngs=rngs, init_std=None)
    self.ln_post = layers.layer_norm(width, rngs=rngs)

  def __call__(self, q: jax.Array) -> jax.Array:
    b, h, w, d = q.shape
    t = self.upscale_2(jax.nn.relu(self.upscale_0(q.reshape(b, h * w, d))))
    cls = jnp.broadcast_to(self.class_embedding[...], (b, 1, t.shape[-1]))
    t = jnp.concatenate([cls, t], axis=1) + self.positional_embedding[...]
    return self.ln_post(self.transformer(self.ln_pre(t)))


# ---------------------------------------------------------------------------------------
# Convolutional trunk and decoder.
# ---------------------------------------------------------------------------------------
class ConvLevel(nnx.Module):
  """One VQGAN level: ResnetBlocks (each followed by an AttnBlock when `attn`), then an
  optional resampler (`downsample` / `upsample`). Official `conv_blocks.<i>`."""

  def __init__(self, cin: int, cout: int, num_blocks: int, *, attn: bool, resample: str,
               rngs: nnx.Rngs):
    self.res = nnx.List([ResnetBlock(cin if i == 0 else cout, cout, vqgan=True, rngs=rngs)
                         for i in range(num_blocks)])
    self.attn = (nnx.List([AttnBlock(cout, rngs=rngs) for _ in range(num_blocks)])
                 if attn else None)
    self.downsample = Downsample(cout, rngs=rngs) if resample == "down" else None
    self.upsample = Upsample(cout, rngs=rngs) if resample == "up" else None

  def blocks(self, x: jax.Array) -> jax.Array:
    for i, blk in enumerate(self.res):
      x = blk(x)
      if self.attn is not None:
        x = self.attn[i](x)
    return x

  def __call__(self, x: jax.Array) -> jax.Array:
    x = self.blocks(x)
    if self.downsample is not None:
      x = self.downsample(x)
    if self.upsample is not None:
      x = self.upsample(x)
    return x


def _mid(width: int, rngs: nnx.Rngs) -> nnx.List:
  """Official `mid`: ResnetBlock, AttnBlock, ResnetBlock."""
  return nnx.List([ResnetBlock(width, width, vqgan=True, rngs=rngs),
                   AttnBlock(width, rngs=rngs),
                   ResnetBlock(width, width, vqgan=True, rngs=rngs)])


class FQGANEncoder(nnx.Module):
  """Shared trunk + per-branch heads: `[B, S, S, 3]` in [-1, 1] -> k maps `[B, h, w, Z]`.

  Attributes (official names): `conv_in`, `conv_blocks` (levels; attention at the lowest
  level only), `mid`, and per branch i (in `config.branches` order) `adapters[i]`
  (`<semantic|visual>_head*.0`), `norm_out[i]`, `conv_out[i]` (`norm_out_<b>`, `conv_out_<b>`).
  """

  def __init__(self, config: FQGANConfig, *, rngs: nnx.Rngs):
    c = config
    mult, n = c.encoder_ch_mult, len(c.encoder_ch_mult)
    in_mult = (1,) + mult
    self.conv_in = _conv(c.in_channels, c.ch, 3, rngs=rngs)
    self.conv_blocks = nnx.List([
        ConvLevel(c.ch * in_mult[i], c.ch * mult[i], c.num_res_blocks, attn=i == n - 1,
                  resample="down" if i < n - 1 else "", rngs=rngs)
        for i in range(n)])
    top = c.trunk_width
    self.mid = _mid(top, rngs)
    self.adapters = nnx.List([
        FactorizedAdapter(c.grid_size, top, c.adapter_layers, c.adapter_heads,
                          mlp_ratio=c.mlp_ratio, unroll=c.scan_unroll, rngs=rngs)
        for _ in c.branches])
    self.norm_out = nnx.List([layers.group_norm(top, rngs=rngs) for _ in c.branches])
    self.conv_out = nnx.List([_conv(top, c.z_channels, 3, rngs=rngs) for _ in c.branches])
    self.branches = c.branches

  def __call__(self, x: jax.Array, capture: Capture = None) -> list[jax.Array]:
    h = self.conv_in(x)
    for i, level in enumerate(self.conv_blocks):
      h = level(h)
      _put(capture, f"enc_level{i}", h)
    for blk in self.mid:
      h = blk(h)
    _put(capture, "enc_mid", h)
    out = []
    for i, b in enumerate(self.branches):
      a = self.adapters[i](h)
      _put(capture, f"enc_adapter_{b}", a)
      out.append(self.conv_out[i](jax.nn.silu(self.norm_out[i](a))))
      _put(capture, f"h_{b}", out[-1])
    return out


class FQGANDecoder(nnx.Module):
  """`[B, h, w, Z]` -> `[B, S, S, out_channels]` (official range, unclamped).

  Attributes (official names): `conv_in`, `mid`, `conv_blocks` (j = 0 is the lowest
  resolution, with attention; `num_res_blocks + 1` ResnetBlocks each; upsampling at all but
  the last), `norm_out`, `conv_out`.
  """

  def __init__(self, config: FQGANConfig, *, rngs: nnx.Rngs):
    c = config
    mult, n = c.decoder_ch_mult, len(c.decoder_ch_mult)
    cin = c.ch * mult[-1]
    self.conv_in = _conv(c.z_channels, cin, 3, rngs=rngs)
    self.mid = _mid(cin, rngs)
    levels = []
    for i_level in reversed(range(n)):
      cout = c.ch * mult[i_level]
      levels.append(ConvLevel(cin, cout, c.num_res_blocks + 1, attn=i_level == n - 1,
                              resample="up" if i_level != 0 else "", rngs=rngs))
      cin = cout
    self.conv_blocks = nnx.List(levels)
    self.norm_out = layers.group_norm(cin, rngs=rngs)
    self.conv_out = _conv(cin, c.out_channels, 3, rngs=rngs)

  def __call__(self, z: jax.Array, capture: Capture = None) -> jax.Array:
    h = self.conv_in(z)
    _put(capture, "dec_conv_in", h)
    for blk in self.mid:
      h = blk(h)
    _put(capture, "dec_mid", h)
    for j, level in enumerate(self.conv_blocks):
      h = level(h)
      _put(capture, f"dec_level{j}", h)
    return self.conv_out(jax.nn.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------
# The tokenizer.
# ---------------------------------------------------------------------------------------
class FQGAN(nnx.Module):
  """FQGAN-Dual / -Triple tokenizer (one branch: a single-codebook VQGAN).

  Methods:
    encode(images [B,S,S,3] in [0,1]) -> ids int32 [B, h*w, k] ([B, h*w] for one branch:
      the single-codebook VQGAN of `variants.single_codebook`).
    lookup(ids [B, h*w, k]) -> quantized maps [B, h, w, k*D] (l2-normalised codes).
    decode_tokens(ids [B, h*w, k]) -> images [B, S, S, 3] in [0, 1] (unclamped).
    decode_code(*indices, *shapes): the official `decode_code` argument order
      (`config.decode_code_order`); returns [B, S, S, 3] in [-1, 1].
    forward_official(x [-1,1], train, capture) -> (recon [-1,1], aux).
    __call__(images [0,1], train=False, *, rngs=None) -> (recon [0,1], aux).
    semantic_losses(aux, teacher_cls {branch: [B, W]}) -> {branch: InfoNCE loss}.

  Attributes: `encoder`, `quantize` (its `projections[i]` are the `quant_conv_<b>` and
  `quantizers[i].codebook` the `quantize_<b>.embedding`), `post_quant_conv`, `decoder`,
  `feat_heads` (one per entry of `config.feature_heads`, in `head_branches` order).
  """

  def __init__(self, config: FQGANConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, FQGANConfig):
      raise ValueError(f"config: expected an FQGANConfig, got {type(config).__name__}")
    c = self.config = config
    self.encoder = FQGANEncoder(c, rngs=rngs)
    self.quantize = FactorizedVectorQuantizer(
        c.codebook_size, c.z_channels, num_factors=c.num_branches, code_dim=c.codebook_dim,
        distance="cosine" if c.use_l2_norm else "l2", beta=c.commitment_cost,
        entropy_loss_weight=c.entropy_loss_weight, entropy_temperature=c.entropy_temperature,
        disentangle_weight=c.disentangle_weight, rngs=rngs)
    self.post_quant_conv = _conv(c.num_branches * c.codebook_dim, c.z_channels, 1, rngs=rngs)
    self.decoder = FQGANDecoder(c, rngs=rngs)
    self.head_branches = tuple(b for b in c.branches if b in c.feature_heads)
    self.feat_heads = nnx.List([
        FeatPredHead(c.codebook_dim, c.grid_size, *c.feature_heads[b], mlp_ratio=c.mlp_ratio,
                     unroll=c.scan_unroll, rngs=rngs)
        for b in self.head_branches])

  @property
  def token_spec(self) -> TokenSpec:
    c = self.config
    return TokenSpec(num_tokens=c.grid_size ** 2, image_size=c.image_size,
                     vocab_size=c.codebook_size, ids_per_token=c.num_branches)

  # ---- parts (official range) ----
  def branch_slice(self, zq: jax.Array, branch: str) -> jax.Array:
    """The `[..., D]` channels of `branch` in a concatenated `[..., k*D]` map."""
    i, d = self.config.branches.index(branch), self.config.codebook_dim
    return zq[..., i * d:(i + 1) * d]

  def predict_features(self, zq: jax.Array) -> dict[str, jax.Array]:
    """Feature-head outputs `{branch: [B, 1 + h*w, W]}` from the concatenated codes."""
    return {b: head(self.branch_slice(zq, b))
            for b, head in zip(self.head_branches, self.feat_heads)}

  def decode_quantized(self, zq: jax.Array, capture: Capture = None) -> jax.Array:
    """Concatenated codes `[B, h, w, k*D]` -> images `[B, S, S, 3]` in [-1, 1]."""
    z = self.post_quant_conv(zq.astype(jnp.float32))
    _put(capture, "post_quant", z)
    return self.decoder(z, capture)

  def forward_official(self, x: jax.Array, train: bool = False, capture: Capture = None
                       ) -> tuple[jax.Array, dict[str, Any]]:
    """The official forward on `[B, S, S, 3]` in [-1, 1]: (recon in [-1, 1], aux).

    aux: `losses` {`quantizer`: sum over branches of codebook + commitment + entropy, plus the
    disentanglement loss}, `codebook_loss`, `commitment_loss`, `entropy_loss`,
    `disentangle_loss`, `factor_losses` (per branch), `ids` `[B, h*w, k]` int32, `stats`,
    `latents` `[B, h, w, k*D]`, `semantic_features` `{branch: [B, 1 + h*w, W]}`.
    """
    hs = self.encoder(x, capture)
    zs = self.quantize.project(hs)
    for b, z in zip(self.config.branches, zs):
      _put(capture, f"z_{b}", z)
    zq, qaux = self.quantize.quantize_projected(zs, train=train)
    _put(capture, "concat", zq)
    recon = self.decode_quantized(zq, capture)
    b = x.shape[0]
    aux = {**{k: qaux[k] for k in ("codebook_loss", "commitment_loss", "entropy_loss",
                                   "disentangle_loss", "factor_losses", "stats")},
           "ids": self._token_ids(qaux["ids"], b),
           "latents": zq,
           "semantic_features": self.predict_features(zq),
           "losses": {"quantizer": qaux["loss"]}}
    return recon, aux

  def semantic_losses(self, aux: Mapping[str, Any], teacher_cls: Mapping[str, jax.Array]
                      ) -> dict[str, jax.Array]:
    """InfoNCE of each head's CLS prediction against `teacher_cls[branch]` `[B, W]`."""
    feats = aux["semantic_features"]
    missing = sorted(set(feats) - set(teacher_cls))
    if missing:
      raise ValueError(f"teacher_cls: expected CLS features for branches {sorted(feats)}, "
                       f"missing {missing}")
    return {b: infonce_cls_loss(f[:, 0], teacher_cls[b]) for b, f in feats.items()}

  # ---- public API ([0, 1] images) ----
  def _official_input(self, images: jax.Array) -> jax.Array:
    interface.check_image_shape(images, self.config.image_size, "images")
    return images.astype(jnp.float32) * 2.0 - 1.0

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` float in [0, 1] -> ids `[B, h*w, k]` int32 (k in branch order)."""
    hs = self.encoder(self._official_input(images))
    _, qaux = self.quantize(hs, train=False)
    return self._token_ids(qaux["ids"], images.shape[0])

  def _token_ids(self, ids: jax.Array, batch: int) -> jax.Array:
    """Quantizer ids `[..., k]` -> tokens `[B, h*w, k]` int32 (`[B, h*w]` for one branch)."""
    k = self.config.num_branches
    ids = ids.reshape(batch, -1, k).astype(jnp.int32)
    return ids[..., 0] if k == 1 else ids

  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids `[B, h*w, k]` (one branch: `[B, h*w]` or `[B, h*w, 1]`) -> concatenated codes
    `[B, h, w, k*D]` float32."""
    g = self.config.grid_size
    if self.config.num_branches == 1 and ids.ndim == 2:
      ids = ids[..., None]
    return self.quantize.lookup(ids).reshape(ids.shape[0], g, g, -1)

  def decode_tokens(self, ids: jax.Array) -> jax.Array:
    """ids `[B, h*w, k]` int -> images `[B, S, S, 3]` float32 in [0, 1] (unclamped)."""
    spec = self.token_spec
    interface.check_id_shape(ids, spec, "ids")
    if ids.shape[1] != spec.num_tokens:
      raise ValueError(f"ids: FQGAN decodes the full {self.config.grid_size}x"
                       f"{self.config.grid_size} grid, expected shape {spec.shape_str()}, got "
                       f"{tuple(ids.shape)}")
    return self.decode_quantized(self.lookup(ids)) * 0.5 + 0.5

  def decode_code(self, *args) -> jax.Array:
    """Official `decode_code`: k index arrays then (optionally) k shapes, in the order
    `config.decode_code_order` (Dual: `indices_sem, indices_vis, shape_sem, shape_vis`;
    Triple: `indices_vis, indices_sem_mid, indices_sem_high, ...`).

    Indices may be flat `(B*h*w,)` (with a shape `(B, D, h, w)`) or `[B, h, w]`. Returns
    `[B, S, S, 3]` in [-1, 1] (NHWC).
    """
    order, k = self.config.decode_code_order, self.config.num_branches
    if len(args) not in (k, 2 * k):
      raise ValueError(f"args: expected {k} index arrays ({', '.join(order)}) optionally "
                       f"followed by {k} shapes, got {len(args)} arguments")
    shapes = args[k:] if len(args) == 2 * k else (None,) * k
    g = self.config.grid_size
    by_branch = {}
    for name, idx, shape in zip(order, args[:k], shapes):
      idx = jnp.asarray(idx)
      if shape is not None:
        idx = idx.reshape(shape[0], shape[2], shape[3])
      if idx.ndim == 1:
        idx = idx.reshape(-1, g, g)
      if idx.ndim != 3 or idx.shape[1:] != (g, g):
        raise ValueError(f"indices_{name}: expected [B, {g}, {g}] or flat (B*{g * g},), got "
                         f"shape {tuple(idx.shape)}")
      by_branch[name] = idx
    ids = jnp.stack([by_branch[b] for b in self.config.branches], axis=-1)
    return self.decode_quantized(self.lookup(ids.reshape(ids.shape[0], g * g, k)))

  def __call__(self, images: jax.Array, train: bool = False, *, rngs: Any = None
               ) -> tuple[jax.Array, dict[str, Any]]:
    """`[B, S, S, 3]` in [0, 1] -> (recon `[B, S, S, 3]` in [0, 1] unclamped, aux); aux as
    `forward_official` (`rngs` unused: the forward is deterministic)."""
    recon, aux = self.forward_official(self._official_input(images), train=train)
    return recon * 0.5 + 0.5, aux
