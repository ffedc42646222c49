"""TiTok: a 1D image tokenizer (arXiv 2406.07550), in Flax NNX.

An image is cut into p x p patches; a ViT encoder runs over [cls, patches, K learned latent
tokens] and keeps the K latent positions, which are projected to `token_size` channels and
passed through the bottleneck named by `config.quantizer` (built from
`quantizers.QUANTIZERS`: VQ, factorized VQ, FSQ, or a diagonal Gaussian for the continuous VAE
variants). A ViT decoder runs over [cls, g*g mask tokens, K embedded latents] and turns the g*g
mask positions into an image, through one of two heads:

- "two_stage" (the released S-128 / B-64 / L-32 and all One-D-Piece models): logits over the
  1024 entries of the MaskGIT-VQGAN codebook; softmax; soft code map (probabilities x codebook);
  the MaskGIT-VQGAN conv pixel decoder. Stage 1 trains the logits with cross-entropy against
  MaskGIT proxy codes (`aux["logits"]`).
- "pixel" (BL-64 / BL-128 / SL-256 VQ-8k and the VAE models): p*p*3 values per mask position,
  unpatchified, then a 3x3 conv.

`legacy_projection=True` reproduces the released legacy weights' latent projection: the
`[B, K, W]` latents are reinterpreted as `[B, W, K]` by a raw reshape (no transpose) before the
1x1 projection -- an upstream bug that the released weights were trained with.

One-D-Piece (arXiv 2501.10064) is this model with `tail_token_drop=True` (`one_d_piece.py`).

Images are NHWC float32 in [0, 1] (no mean/std normalization, as the released models).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers import interface, layers, token_drop
from jaxtok.tokenizers.interface import TokenSpec
from jaxtok.tokenizers.maskgit_vqgan import MaskGITDecoder
from jaxtok.tokenizers.quantizers import build_quantizer
from jaxtok.tokenizers.quantizers.gaussian import as_key
from jaxtok.tokenizers.spatial import pool_to_latents, spread_to_patches
from jaxtok.tokenizers.titok.config import TiTokConfig

__all__ = ["TiTok", "TiTokDecoder", "TiTokEncoder"]


class TiTokEncoder(nnx.Module):
  """ViT over [cls, patches, K latent tokens] -> K projected latents.

  Attributes (official names): `patch_embed`, `class_embedding` [1, W],
  `positional_embedding` [1 + g*g, W], `latent_tokens` [K, W] (top-level `latent_tokens` in the
  official state dict), `latent_token_positional_embedding` [K, W], `ln_pre`, `transformer`,
  `ln_post`, `conv_out` (a 1x1 conv, i.e. a Dense W -> latent_channels).
  """

  def __init__(self, config: TiTokConfig, *, rngs: nnx.Rngs):
    w, k = config.enc_width, config.num_latent_tokens
    self.config = config
    scale = w ** -0.5
    init = config.init_std
    self.patch_embed = layers.PatchEmbed(config.enc_patch_size, 3, w, rngs=rngs, init_std=init)
    self.class_embedding = layers.normal_param((1, w), scale, rngs)
    self.positional_embedding = layers.normal_param((config.enc_grid ** 2 + 1, w), scale, rngs)
    self.latent_tokens = layers.normal_param((k, w), scale, rngs)
    self.latent_token_positional_embedding = layers.normal_param((k, w), scale, rngs)
    self.ln_pre = layers.layer_norm(w, rngs=rngs)
    self.transformer = layers.Transformer(w, config.enc_depth, config.enc_heads,
                                          mlp_ratio=config.mlp_ratio,
                                          unroll=config.scan_unroll, remat=config.remat,
                                          rngs=rngs, init_std=init)
    self.ln_post = layers.layer_norm(w, rngs=rngs)
    self.conv_out = layers.vit_linear(w, config.latent_channels, rngs=rngs, init_std=init)

  def latents(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` -> hidden states of the K latent positions after ln_post, `[B, K, W]`."""
    b = images.shape[0]
    x = self.patch_embed(images)  # [B, g*g, W]
    cls = jnp.broadcast_to(self.class_embedding[...], (b, 1, x.shape[-1]))
    x = jnp.concatenate([cls, x], axis=1) + self.positional_embedding[...]
    lat = self.latent_tokens[...] + self.latent_token_positional_embedding[...]
    lat = jnp.broadcast_to(lat, (b,) + lat.shape)
    if self.config.spatial_latents:
      lat = lat + pool_to_latents(x[:, 1:], self.config.num_latent_tokens, self.config.enc_grid,
                                  self.config.spatial_order)
    x = self.ln_pre(jnp.concatenate([x, lat], axis=1))
    x = self.transformer(x)
    return self.ln_post(x[:, -self.config.num_latent_tokens:])

  def project(self, lat: jax.Array) -> jax.Array:
    """`[B, K, W]` -> `[B, K, latent_channels]` (legacy: raw reshape to [B, W, K] first)."""
    b, k, w = lat.shape
    if self.config.legacy_projection:
      y = lat.reshape(b, w, k)  # The released weights' raw reinterpretation; no transpose.
      return jnp.einsum("bwk,wc->bkc", y, self.conv_out.kernel[...]) + self.conv_out.bias[...]
    return self.conv_out(lat)

  def __call__(self, images: jax.Array) -> jax.Array:
    return self.project(self.latents(images))


class TiTokDecoder(nnx.Module):
  """ViT over [cls, g*g mask tokens, L <= K embedded latents] -> head output.

  Attributes (official names): `decoder_embed` (C -> W_d), `class_embedding` [1, W_d],
  `positional_embedding` [1 + g*g, W_d], `mask_token` [1, 1, W_d],
  `latent_token_positional_embedding` [K, W_d] (first L rows used for L tokens), `ln_pre`,
  `transformer`, `ln_post`; two-stage head `ffn_0` (W_d -> 2W_d), tanh, `ffn_2`
  (2W_d -> N_pix); pixel head `ffn_0` (W_d -> p*p*3), with `pixel_base` `ffn_base` (W_d -> 3,
  bilinearly upsampled and added), and `conv_out` (3x3, 3 -> 3).
  """

  def __init__(self, config: TiTokConfig, *, rngs: nnx.Rngs):
    w, k = config.dec_width, config.num_latent_tokens
    self.config = config
    scale = w ** -0.5
    init = config.init_std
    # The output head keeps a small init either way: LeCun there makes the untrained model
    # emit unit-variance pixel noise that a short run spends its steps unlearning.
    head_init = layers.VIT_INIT_STD if init is None else init
    self.decoder_embed = layers.vit_linear(config.token_size, w, rngs=rngs, init_std=init)
    self.class_embedding = layers.normal_param((1, w), scale, rngs)
    self.positional_embedding = layers.normal_param((config.dec_grid ** 2 + 1, w), scale, rngs)
    self.mask_token = layers.normal_param((1, 1, w), scale, rngs)
    self.latent_token_positional_embedding = layers.normal_param((k, w), scale, rngs)
    self.ln_pre = layers.layer_norm(w, rngs=rngs)
    self.transformer = layers.Transformer(w, config.dec_depth, config.dec_heads,
                                          mlp_ratio=config.mlp_ratio,
                                          unroll=config.scan_unroll, remat=config.remat,
                                          rngs=rngs, init_std=init)
    self.ln_post = layers.layer_norm(w, rngs=rngs)
    if config.head == "two_stage":
      self.ffn_0 = layers.vit_linear(w, 2 * w, rngs=rngs, init_std=head_init)
      self.ffn_2 = layers.vit_linear(2 * w, config.pixel_codebook_size, rngs=rngs,
                                     init_std=head_init)
      self.conv_out = self.ffn_base = None
    else:
      p = config.dec_patch_size
      self.ffn_0 = layers.vit_linear(w, p * p * 3, rngs=rngs, init_std=head_init)
      self.ffn_2 = None
      self.conv_out = nnx.Conv(3, 3, (3, 3), padding="SAME",
                               kernel_init=layers.vit_kernel_init(head_init),
                               bias_init=nnx.initializers.zeros_init(), rngs=rngs)
      # `pixel_base`: one colour per decoder position, bilinearly upsampled under the patches.
      self.ffn_base = (layers.vit_linear(w, 3, rngs=rngs, init_std=head_init)
                       if config.pixel_base else None)
      if init is None:  # Small-data init: the conv starts as the identity, the image grey.
        self.conv_out.kernel[...] = jnp.zeros((3, 3, 3, 3)).at[1, 1].set(jnp.eye(3))
        grey = self.ffn_base if config.pixel_base else self.ffn_0
        grey.bias[...] = jnp.full(grey.bias.shape, 0.5)

  def hidden(self, z: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
    """Mask-position hidden states after ln_post.

    Args:
      z: `[B, L, C]` token vectors, 1 <= L <= K (a prefix uses the first L latent pos rows).
      lengths: optional `[B]` int, tokens kept per example; latents at positions >= length are
        hidden from every query (tail-token-drop with a static shape).

    Returns:
      `[B, g*g, W_d]`.
    """
    b, n = z.shape[0], z.shape[1]
    g2 = self.config.dec_grid ** 2
    content = self.decoder_embed(z)
    x = content + self.latent_token_positional_embedding[:n]
    w = x.shape[-1]
    masks = jnp.broadcast_to(self.mask_token[...], (b, g2, w))
    if self.config.spatial_latents:  # Each mask position gets its regions' tokens (0 if absent).
      if lengths is not None:
        content = jnp.where((jnp.arange(n)[None, :] < lengths[:, None])[..., None], content, 0)
      k = self.config.num_latent_tokens
      content = jnp.pad(content, ((0, 0), (0, k - n), (0, 0)))
      masks = masks + spread_to_patches(content, self.config.dec_grid, self.config.spatial_order)
    cls = jnp.broadcast_to(self.class_embedding[...], (b, 1, w))
    prefix = jnp.concatenate([cls, masks], axis=1) + self.positional_embedding[...]
    x = self.ln_pre(jnp.concatenate([prefix, x], axis=1))
    key_mask = None
    if lengths is not None:
      keep = jnp.arange(n)[None, :] < lengths[:, None]  # [B, L]
      key_mask = jnp.concatenate([jnp.ones((b, 1 + g2), bool), keep], axis=1)
    x = self.transformer(x, key_mask)
    return self.ln_post(x[:, 1:1 + g2])

  def logits(self, h: jax.Array) -> jax.Array:
    """Two-stage head: `[B, g*g, W_d]` -> MaskGIT code logits `[B, g, g, N_pix]`."""
    g = self.config.dec_grid
    out = self.ffn_2(jnp.tanh(self.ffn_0(h)))
    return out.reshape(h.shape[0], g, g, -1)

  def pixel_head(self, h: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Pixel head: `[B, g*g, W_d]` -> (unpatchified ffn output, image), both `[B, S, S, 3]`."""
    c = self.config
    ffn = layers.pixel_unpatchify(self.ffn_0(h), c.dec_grid, c.dec_patch_size)
    if self.ffn_base is not None:
      base = self.ffn_base(h).reshape(h.shape[0], c.dec_grid, c.dec_grid, 3)
      ffn = ffn + jax.image.resize(base, ffn.shape, "bilinear")
    return ffn, self.conv_out(ffn)


class TiTok(nnx.Module):
  """TiTok / One-D-Piece tokenizer.

  Methods:
    encode(images [B,S,S,3] float) -> ids int32 [B, K] (`[B, K, k]` factorized; continuous
      bottleneck: the posterior mean [B, K, C] float32).
    encode_latents(images, *, sample=False, rngs=None) -> [B, K, C] float32.
    decode_tokens(ids [B, L]) -> images float32 [B, S, S, 3] (unclamped), 1 <= L <= K.
    decode_latents(z [B, L, C], *, lengths=None) -> (images, head_aux).
    __call__(images, train=False, *, rngs=None) -> (recon, aux).

  Attributes:
    token_spec: the `TokenSpec` the API reads (token shape, vocabulary, prefix decoding).
  """

  def __init__(self, config: TiTokConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, TiTokConfig):
      raise ValueError(f"config: expected a TiTokConfig, got {type(config).__name__}")
    self.config = config
    self.encoder = TiTokEncoder(config, rngs=rngs)
    self.quantize = build_quantizer(
        config.quantizer, dim=config.token_size, codebook_size=config.codebook_size,
        distance="cosine" if config.use_l2_norm else "l2", beta=config.commitment_cost,
        num_factors=config.num_sub_codebooks, rngs=rngs, **config.quantizer_kwargs)
    self.decoder = TiTokDecoder(config, rngs=rngs)
    if config.head == "two_stage":
      pc = config.pixel_decoder
      self.pixel_codebook = layers.normal_param((config.pixel_codebook_size, pc.z_channels),
                                                1.0 / config.pixel_codebook_size, rngs)
      self.pixel_decoder = MaskGITDecoder(pc, rngs=rngs)
    else:
      self.pixel_codebook = None
      self.pixel_decoder = None

  @property
  def token_spec(self) -> TokenSpec:
    c = self.config
    continuous = c.quantizer == "gaussian"
    q = self.quantize
    if continuous or c.quantizer in ("vq", "factorized_vq"):
      vocab = None if continuous else c.codebook_size
      per_token = c.num_sub_codebooks if c.quantizer == "factorized_vq" else 1
      radix = None
    else:
      # FSQ: prod(levels) codes coded as their digits; LFQ / BSQ: 2**b codes per group coded as
      # bits, one id per group; RVQ: one id of num_codes per depth; SimVQ: one id.
      vocab = q.num_codes
      per_token = getattr(q, "ids_per_token", 1)
      radix = q.levels if c.quantizer == "fsq" else getattr(q, "radix", None)
    return TokenSpec(num_tokens=c.num_latent_tokens, image_size=c.image_size, vocab_size=vocab,
                     ids_per_token=per_token, channels=c.token_size if continuous else None,
                     prefix=c.tail_token_drop, radix=radix)

  # ---- encoder side ----
  def _latents(self, images: jax.Array) -> jax.Array:
    interface.check_image_shape(images, self.config.image_size, "images")
    # The weights' dtype is the compute dtype: float32, or bfloat16 when the trainer casts
    # the params for mixed precision (a float32 input would promote every matmul back).
    return self.encoder(images.astype(self.encoder.patch_embed.proj.kernel.dtype))

  def encode_latents(self, images: jax.Array, *, sample: bool = False,
                     rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
    """Continuous token vectors `[B, K, C]` float32.

    Discrete bottlenecks: the quantized (codebook) vectors; "gaussian": the posterior mean,
    or a sample with `sample=True` (needs `rngs`).
    """
    z = self._latents(images)
    if sample and self.token_spec.continuous:
      zq, _ = self.quantize(z, train=True,
                            rngs=as_key(rngs, "rngs (needed to sample the posterior)"))
    else:
      zq, _ = self.quantize(z, train=False)
    return zq.astype(jnp.float32)

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` float in [0, 1] -> ids `[B, K]` int32 (`[B, K, k]` factorized;
    continuous bottleneck: the posterior mean `[B, K, C]` float32)."""
    zq, aux = self.quantize(self._latents(images), train=False)
    if self.token_spec.continuous:
      return zq
    return aux["ids"].astype(jnp.int32)

  # ---- decoder side ----
  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids `[B, L]` (`[B, L, k]` factorized) -> token vectors `[B, L, C]`."""
    return self.quantize.lookup(ids)

  def decode_latents(self, z: jax.Array, *, lengths: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token vectors `[B, L, C]` -> (images `[B, S, S, 3]` unclamped, head outputs).

    Head outputs: two-stage: `"logits"` `[B, g, g, N_pix]`, `"pixel_decoder_input"`
    `[B, g, g, Z]`; pixel head: `"ffn_out"` `[B, S, S, 3]`.
    """
    if z.ndim != 3 or z.shape[-1] != self.config.token_size:
      raise ValueError(f"z: expected [B, L, {self.config.token_size}], got {tuple(z.shape)}")
    interface.check_prefix_length(z.shape[1], self.config.num_latent_tokens, "z (token axis)")
    h = self.decoder.hidden(z.astype(self.decoder.decoder_embed.kernel.dtype), lengths)
    if self.config.head == "two_stage":
      logits = self.decoder.logits(h)
      soft = jax.nn.softmax(logits, axis=-1) @ self.pixel_codebook[...]
      return self.pixel_decoder(soft), {"logits": logits, "pixel_decoder_input": soft}
    ffn, img = self.decoder.pixel_head(h)
    return img, {"ffn_out": ffn}

  def decode_tokens(self, ids: jax.Array) -> jax.Array:
    """ids `[B, L]` int, 1 <= L <= K (a prefix for One-D-Piece) -> `[B, S, S, 3]` float32.

    Continuous bottlenecks take the latents `[B, L, C]` float instead.
    """
    spec = self.token_spec
    interface.check_id_shape(ids, spec, "ids")
    z = jnp.asarray(ids) if spec.continuous else self.lookup(ids)
    return self.decode_latents(z)[0]

  # ---- training forward ----
  def __call__(self, images: jax.Array, train: bool = False, *,
               rngs: nnx.Rngs | jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, Any]]:
    """Encode, quantize, decode. Returns `(recon [B, S, S, 3], aux)`.

    aux: `losses` (the named terms the trainer sums: `quantizer`, and for "gaussian" `kl`,
    summed over tokens and channels, mean over the batch), `commitment_loss`, `codebook_loss`
    (logged parts), `stats` (quantizer statistics), `latents` `[B, K, C]` (quantized /
    sampled), `num_tokens_kept` `[B]` int32, `ids` (discrete bottlenecks), `logits`
    `[B, g, g, N_pix]` (two-stage head), and for "gaussian" `posterior_mean`,
    `posterior_logvar`.
    With `train=True`, tail-token-drop (config) and Gaussian sampling draw from `rngs`.
    """
    b, k = images.shape[0], self.config.num_latent_tokens
    z = self._latents(images)
    drop = train and self.config.tail_token_drop
    # The quantizer's own draw: the Gaussian sample, or residual VQ's quantizer dropout.
    sample = train and (self.token_spec.continuous
                        or getattr(self.quantize, "train_needs_rngs", False))
    key = qkey = None
    if drop or sample:
      key = as_key(rngs, "rngs (train=True needs randomness for tail-token-drop / sampling)")
    if sample:
      key, qkey = jax.random.split(key)
    zq, qaux = self.quantize(z, train=train, rngs=qkey)
    # `losses`: the terms the trainer sums, each times its `LossConfig` weight (`term_weight`).
    aux: dict[str, Any] = dict(losses={"quantizer": qaux["loss"]},
                               commitment_loss=qaux["commitment_loss"],
                               codebook_loss=qaux["codebook_loss"], stats=qaux["stats"])
    if "kl_loss" in qaux:
      aux["losses"]["kl"] = qaux["kl_loss"]
    for name in ("ids", "posterior_mean", "posterior_logvar"):
      if name in qaux:
        aux[name] = qaux[name]
    lengths = (token_drop.keep_lengths(key, b, k, self.config.tail_token_drop_mode)
               if drop else None)
    recon, head = self.decode_latents(zq, lengths=lengths)
    aux["latents"] = zq
    aux["num_tokens_kept"] = (jnp.full((b,), k, jnp.int32) if lengths is None else lengths)
    if "logits" in head:
      aux["logits"] = head["logits"]
    return recon, aux
