"""FlexTok (arXiv 2502.13967): images -> 1-D ordered FSQ tokens of flexible length, decoded by a
rectified-flow transformer, in Flax NNX.

- Encoder: the front-end array (pixels in [-1, 1], or VAE latents) is cut into p x p patches,
  embedded, given the fixed 2-D sin-cos table, and followed by R learned registers; a pre-LN
  transformer (bias-free projections, QK-norm, SwiGLU, no-affine LayerNorms, muP softmax scale
  8 / head_dim) runs over [patches ‖ registers] with the `causal_last` mask (register i sees
  all patches and registers 0..i), so a prefix of the output equals encoding with fewer
  registers; a no-affine LayerNorm and a (zero-init) Linear map the registers to the FSQ
  dimension.
- FSQ (arXiv 2309.15505, levels [8, 8, 8, 5, 5, 5] = 64,000 codes) from the shared quantizer
  core.
- Decoder: the codes are projected to the decoder width and given a learned register position
  embedding; registers from the kept length k on are replaced by a learned mask token (nested
  dropout; `token_drop.keep_lengths` draws k in training); the unconditional pass replaces all
  of them by a learned null condition. A single-stream transformer over [noised latent patches
  ‖ register conditions] with adaLN-zero modulation from the timestep embedding (one
  modulation per sub-sequence) and an adaLN head predicts the rectified-flow velocity of the
  patches (`flow.py`), sampled with Euler steps and CFG or APG guidance.
- Optional locality prior (`spatial_registers`, ours; off in the published variants):
  registers tied to a coarse-to-fine quadtree of regions; the encoder adds each region's mean
  patch token to its register, the decoder adds to each noised patch the kept conditions of
  the registers covering it.

Arrays are NHWC inside; the official layouts are NCHW (converters transpose). Semantics and
official names: tests/fixtures/flextok/README.md.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers import flow, interface, layers, repa, token_drop
from jaxtok.tokenizers.flextok.config import FlexTokConfig, mup_attention_scale
from jaxtok.tokenizers.interface import TokenSpec
from jaxtok.tokenizers.quantizers import build_quantizer
from jaxtok.tokenizers.quantizers.fsq import fsq_bound
from jaxtok.tokenizers.quantizers.gaussian import as_key
from jaxtok.tokenizers.spatial import pool_to_latents, spread_to_patches
from jaxtok.tokenizers.vae.convert import load_autoencoder
from jaxtok.tokenizers.vae.model import AutoencoderKL

__all__ = ["FlexTok", "FlexTokDecoder", "FlexTokEncoder"]

# Registers, register posemb, mask token and null condition: N(0, 0.02^2) (trunc-normal 0.02
# in the official init).
_TOKEN_INIT_STD = 0.02


def _block_kwargs(width: int, head_dim: int) -> dict[str, Any]:
  return dict(use_bias=False, qk_norm=True, attn_scale=mup_attention_scale(head_dim),
              mlp="swiglu", norm_affine=False)


def _noise_key(seed: int | jax.Array) -> jax.Array:
  """The sampler's noise key from a seed: an int or int array (traced or not), or a key."""
  if isinstance(seed, jax.Array) and (jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key)
                                      or seed.ndim == 1):
    return seed  # A typed key, or a raw uint32 [2] key.
  return jax.random.key(seed if isinstance(seed, jax.Array) else int(seed))


def _zero_linear(din: int, dout: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(din, dout, kernel_init=nnx.initializers.zeros_init(),
                    bias_init=nnx.initializers.zeros_init(), rngs=rngs)


class FlexTokEncoder(nnx.Module):
  """[patches ‖ registers] transformer -> `[B, R, code_dim]` pre-quantization latents.

  Attributes (official `encoder.module_dict.*` in parentheses): `patch_emb`
  (enc_patch_emb.patch_proj), `registers` [R, W] (enc_register_module.registers),
  `transformer` (enc_transformer), `to_latents` (enc_to_latents.proj, zero-init).
  """

  def __init__(self, config: FlexTokConfig, *, rngs: nnx.Rngs):
    c, w = config, config.enc_width
    self.config = config
    self.patch_emb = layers.PatchEmbed(c.patch_size, c.channels, w, rngs=rngs,
                                       init_std=c.init_std)
    self.registers = layers.normal_param((c.num_registers, w), _TOKEN_INIT_STD, rngs)
    self.transformer = layers.Transformer(w, c.enc_depth, c.enc_heads, mlp_ratio=c.mlp_ratio,
                                          unroll=c.scan_unroll, rngs=rngs, init_std=c.init_std,
                                          **_block_kwargs(w, c.enc_head_dim))
    self.to_latents = _zero_linear(w, c.code_dim, rngs)

  def patch_tokens(self, x: jax.Array) -> jax.Array:
    """`[B, S, S, C]` -> patch embedding + sin-cos table `[B, P, W]`."""
    return self.patch_emb(x) + layers.sincos_2d(self.config.grid, self.config.enc_width)

  def attn_mask(self) -> jax.Array | None:
    c = self.config
    return layers.attention_mask(c.enc_mask, c.num_patches, c.num_registers)

  def tokens(self, x: jax.Array) -> jax.Array:
    """Input sequence `[B, P + R, W]` of the transformer (`spatial_registers`: register i
    + the mean patch token of its region)."""
    c = self.config
    p = self.patch_tokens(x)
    reg = jnp.broadcast_to(self.registers[...], (p.shape[0],) + self.registers.shape)
    if c.spatial_registers:
      reg = reg + pool_to_latents(p, c.num_registers, c.grid, "coarse_to_fine")
    return jnp.concatenate([p, reg], axis=1)

  def registers_out(self, x: jax.Array) -> jax.Array:
    """Last block's output at the register positions `[B, R, W]` (before the head LN)."""
    h = self.transformer(self.tokens(x), attn_mask=self.attn_mask())
    return h[:, self.config.num_patches:]

  def __call__(self, x: jax.Array) -> jax.Array:
    return self.to_latents(layers.normalize(self.registers_out(x)))


class FlexTokDecoder(nnx.Module):
  """Rectified-flow velocity of the noised patches given R register conditions.

  Attributes (official `decoder.module_dict.*`): `from_latents` (dec_from_latents.proj),
  `register_posemb` [R, W] (dec_registers_posemb_module.posembs), `mask_token` [W]
  (dec_nested_dropout.dropout_mask_token), `nullcond` [W] (dec_latent_dropout.nullcond; None
  for `null_cond="zero"`), `patch_emb` (dec_noise_patch_emb.patch_proj), `time_fc1`,
  `time_fc2` (dec_time_embedder.mlp.0 / .2), `transformer` (dec_transformer, adaLN blocks),
  `head_modulation` (dec_to_patches.adaLN_modulation.1), `head_proj` (dec_to_patches.proj).
  """

  def __init__(self, config: FlexTokConfig, *, rngs: nnx.Rngs):
    c, w = config, config.dec_width
    self.config = config
    init = layers.vit_kernel_init(c.init_std)
    zeros = nnx.initializers.zeros_init()
    self.from_latents = nnx.Linear(c.code_dim, w, kernel_init=init, bias_init=zeros, rngs=rngs)
    self.register_posemb = layers.normal_param((c.num_registers, w), _TOKEN_INIT_STD, rngs)
    self.mask_token = layers.normal_param((w,), _TOKEN_INIT_STD, rngs)
    self.nullcond = (layers.normal_param((w,), _TOKEN_INIT_STD, rngs)
                     if c.null_cond == "learned" else None)
    self.patch_emb = layers.PatchEmbed(c.patch_size, c.channels, w, rngs=rngs,
                                       init_std=c.init_std)
    self.time_fc1 = nnx.Linear(c.time_freq_size, w, kernel_init=init, bias_init=zeros,
                               rngs=rngs)
    self.time_fc2 = nnx.Linear(w, w, kernel_init=init, bias_init=zeros, rngs=rngs)
    self.transformer = layers.Transformer(w, c.dec_depth, c.dec_heads, mlp_ratio=c.mlp_ratio,
                                          unroll=c.scan_unroll, rngs=rngs, init_std=c.init_std,
                                          block="adaln", cond_width=w,
                                          num_subseqs=c.adaln_expansion,
                                          **_block_kwargs(w, c.dec_head_dim))
    self.head_modulation = _zero_linear(w, 2 * w, rngs)
    self.head_proj = _zero_linear(w, c.patch_features, rngs)

  # ---- conditions ----
  def cond_tokens(self, codes: jax.Array) -> jax.Array:
    """FSQ codes `[B, R, code_dim]` -> projected + register posemb `[B, R, W]`."""
    return self.from_latents(codes) + self.register_posemb[...]

  def nested_dropout(self, cond: jax.Array, keep: jax.Array) -> jax.Array:
    """Positions >= keep[b] -> the mask token; `keep` `[B]` int."""
    drop = jnp.arange(cond.shape[1])[None, :] >= keep[:, None]
    return jnp.where(drop[..., None], self.mask_token[...], cond)

  def patch_conditions(self, cond: jax.Array, keep: jax.Array) -> jax.Array | None:
    """`spatial_registers`: the conditions `[B, R, W]` of the kept registers (positions <
    keep[b]) summed onto the patches their regions cover, `[B, P, W]`; None when off."""
    c = self.config
    if not c.spatial_registers:
      return None
    kept = jnp.arange(cond.shape[1])[None, :] < keep[:, None]
    return spread_to_patches(jnp.where(kept[..., None], cond, 0), c.grid, "coarse_to_fine")

  def null_condition(self, cond: jax.Array) -> jax.Array:
    """Every position = the null condition (learned vector or zeros)."""
    null = (jnp.zeros((cond.shape[-1],), cond.dtype) if self.nullcond is None
            else self.nullcond[...])
    return jnp.broadcast_to(null, cond.shape)

  # ---- velocity ----
  def time_embedding(self, t: jax.Array) -> jax.Array:
    """t `[B]` in [0, 1] -> `[B, W]`."""
    c = self.config
    f = flow.timestep_features(t, c.time_freq_size, c.time_max_period, c.max_timestep)
    return self.time_fc2(jax.nn.silu(self.time_fc1(f)))

  def tokens(self, x_t: jax.Array, cond: jax.Array,
             patch_cond: jax.Array | None = None) -> jax.Array:
    """`[B, P + R, W]`: noised patches (embedding + sin-cos, + `patch_cond` `[B, P, W]`
    when given: `patch_conditions`) ‖ conditions."""
    p = self.patch_emb(x_t) + layers.sincos_2d(self.config.grid, self.config.dec_width)
    if patch_cond is not None:
      p = p + patch_cond
    return jnp.concatenate([p, cond], axis=1)

  def block_kwargs(self, temb: jax.Array) -> dict[str, Any]:
    c = self.config
    return dict(cond=temb, sizes=(c.num_patches, c.num_registers))

  def head(self, h: jax.Array, temb: jax.Array) -> jax.Array:
    """Patch hidden states `[B, P, W]` -> velocity `[B, S, S, C]`."""
    c = self.config
    mod = self.head_modulation(jax.nn.silu(temb))
    shift, scale = jnp.split(mod[:, None, :], 2, axis=-1)  # shift first
    y = self.head_proj(layers.normalize(h) * (1 + scale) + shift)
    return layers.pixel_unpatchify(y, c.grid, c.patch_size, c.channels)

  def velocity(self, h: jax.Array, temb: jax.Array, x_t: jax.Array, t: jax.Array) -> jax.Array:
    """The head over the patch states of `h`, plus c_skip(t) * x_t when `skip_data_std` is
    set (the official decoder: the head alone)."""
    v = self.head(h[:, :self.config.num_patches], temb)
    return v if self.config.skip_data_std is None else v + self.skip(x_t, t)

  def skip(self, x_t: jax.Array, t: jax.Array) -> jax.Array:
    """The preconditioning term c_skip(t) * x_t (`skip_data_std` sigma_d set)."""
    sd = self.config.skip_data_std
    var, t = sd * sd, t.astype(jnp.float32).reshape((-1,) + (1,) * (x_t.ndim - 1))
    return x_t * ((t - (1 - t) * var) / (t * t + (1 - t) ** 2 * var)).astype(x_t.dtype)

  def __call__(self, x_t: jax.Array, t: jax.Array, cond: jax.Array,
               patch_cond: jax.Array | None = None) -> jax.Array:
    """Velocity `[B, S, S, C]` at x_t `[B, S, S, C]`, t `[B]`, conditions `[B, R, W]`
    (and, with `spatial_registers`, their `patch_conditions` `[B, P, W]`)."""
    temb = self.time_embedding(t)
    h = self.transformer(self.tokens(x_t, cond, patch_cond), **self.block_kwargs(temb))
    return self.velocity(h, temb, x_t, t)

  def velocity_and_hidden(self, x_t: jax.Array, t: jax.Array, cond: jax.Array, layer: int,
                          patch_cond: jax.Array | None = None
                          ) -> tuple[jax.Array, jax.Array]:
    """`__call__`'s velocity and the patch states after block `layer` `[B, P, W]` (REPA)."""
    temb = self.time_embedding(t)
    h, hidden = self.transformer.with_hidden(self.tokens(x_t, cond, patch_cond), layer,
                                             **self.block_kwargs(temb))
    return self.velocity(h, temb, x_t, t), hidden[:, :self.config.num_patches]


class FlexTok(nnx.Module):
  """FlexTok tokenizer.

  Methods:
    encode(images [B,S,S,3] float in [0,1]) -> ids int32 [B, R] (identity front end).
    encode_latents(x [B,S,S,C]) -> ids; `quantize_latents` -> (codes, ids).
    decode_tokens(ids [B, L], *, steps, guidance, guidance_scale, seed) -> [B,S,S,3] (1<=L<=R).
    decode_padded(ids [B, R], keep [B], ...): the same with a per-image kept length (one
      compile for every k), as front-end arrays; `decode_prefixes`: as images.
    sample(cond, cond_uncond, noise, ...): Euler sampler over front-end arrays.
    __call__(images, train=False, *, rngs) -> (recon, aux with `losses['flow']`).

  Attributes:
    token_spec: the `TokenSpec` the API reads.
    runtime_decode_options: the keyword options of `decode_tokens` that `jaxtok.Tokenizer`
      passes as int32 scalars at run time (a new seed does not recompile); the others are
      compiled in.
  """

  runtime_decode_options = ("seed",)

  def __init__(self, config: FlexTokConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, FlexTokConfig):
      raise ValueError(f"config: expected a FlexTokConfig, got {type(config).__name__}")
    self.config = config
    self.encoder = FlexTokEncoder(config, rngs=rngs)
    self.quantize = build_quantizer("fsq", dim=config.code_dim, levels=config.levels, rngs=rngs)
    self.decoder = FlexTokDecoder(config, rngs=rngs)
    vae = None  # The "vae" front end (built last: the other models' init is unchanged).
    if config.front_end == "vae" and config.vae_checkpoint:
      vae = load_autoencoder(config.vae_checkpoint, config.vae)
      self.config = dataclasses.replace(config, vae_checkpoint="")  # The weights are ours now.
    elif config.front_end == "vae":
      vae = AutoencoderKL(config.vae, rngs=rngs)
    self.vae = vae
    # REPA (arXiv 2410.06940): projects decoder patch states to the teacher's width.
    self.repa_projector = (None if config.repa_layer is None else repa.REPAProjector(
        config.dec_width, config.repa_width, config.repa_dim, rngs=rngs))

  @property
  def token_spec(self) -> TokenSpec:
    c = self.config
    return TokenSpec(num_tokens=c.num_registers, image_size=c.image_size,
                     vocab_size=self.quantize.num_codes, prefix=True,
                     radix=self.quantize.levels)

  # ---- front end ----
  def to_front(self, images: jax.Array) -> jax.Array:
    """Images `[B, S, S, 3]` in [0, 1] -> the encoder's input (identity: [-1, 1]; "vae": the
    frozen VAE's scaled posterior means, no gradient)."""
    if self.config.front_end == "latent":
      raise ValueError(f"images: front_end={self.config.front_end!r} takes front-end latents "
                       f"(encode_latents / decode_padded), not images")
    interface.check_image_shape(images, self.config.image_size, "images")
    if self.vae is not None:
      return jax.lax.stop_gradient(self.vae.encode_latents(images.astype(jnp.float32)))
    return images.astype(jnp.float32) * 2.0 - 1.0

  def from_front(self, x: jax.Array) -> jax.Array:
    """Inverse of `to_front`: images in [0, 1] (unclamped; "vae": the VAE decoder's)."""
    if self.vae is not None:
      return self.vae.decode_latents(x)
    return (x + 1.0) * 0.5

  def _check_latents(self, x: jax.Array, name: str) -> None:
    c = self.config
    want = (c.input_size, c.input_size, c.channels)
    if x.ndim != 4 or tuple(x.shape[1:]) != want:
      raise ValueError(f"{name}: expected [B, {c.input_size}, {c.input_size}, {c.channels}] "
                       f"(NHWC), got {tuple(x.shape)}")

  # ---- encoder side ----
  def quantize_latents(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Front-end array `[B, S, S, C]` -> (FSQ codes `[B, R, d]` float32, ids `[B, R]` int32)."""
    self._check_latents(x, "x")
    codes, aux = self.quantize(self.encoder(x.astype(jnp.float32)), train=False)
    return codes, aux["ids"].astype(jnp.int32)

  def encode_latents(self, x: jax.Array) -> jax.Array:
    """Front-end array `[B, S, S, C]` -> ids `[B, R]` int32."""
    return self.quantize_latents(x)[1]

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` float in [0, 1] -> ids `[B, R]` int32."""
    return self.encode_latents(self.to_front(images))

  # ---- decoder side ----
  def conditions(self, ids: jax.Array, keep: jax.Array) -> tuple[jax.Array, jax.Array]:
    """ids `[B, R]` + kept lengths `[B]` -> (conditions, null conditions), `[B, R, W]`."""
    cond = self.decoder.nested_dropout(self.decoder.cond_tokens(self.quantize.lookup(ids)),
                                       keep)
    return cond, self.decoder.null_condition(cond)

  def patch_conditions(self, ids: jax.Array, keep: jax.Array) -> jax.Array | None:
    """ids `[B, R]` + kept lengths `[B]` -> the decoder's `patch_conditions` `[B, P, W]`
    (`spatial_registers`; None when off). The null pass gets none (zeros)."""
    if not self.config.spatial_registers:
      return None
    return self.decoder.patch_conditions(self.decoder.cond_tokens(self.quantize.lookup(ids)),
                                         keep)

  def sample(self, cond: jax.Array, cond_uncond: jax.Array, noise: jax.Array, *,
             steps: int, guidance: str = "none", guidance_scale: float = 1.0,
             return_trajectory: bool = False, patch_cond: jax.Array | None = None):
    """Euler sampler from `noise` (t = 1) to t = 0; front-end arrays `[B, S, S, C]`.

    `patch_cond`: the conditional pass's `patch_conditions` (`spatial_registers`); the
    unconditional pass gets zeros.
    """
    c = self.config
    guided = guidance != "none" and guidance_scale != 1.0
    b = noise.shape[0]

    def velocity(x, t):
      if not guided:
        return self.decoder(x, t, cond, patch_cond), None
      pc = (None if patch_cond is None
            else jnp.concatenate([patch_cond, jnp.zeros_like(patch_cond)]))
      v = self.decoder(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                       jnp.concatenate([cond, cond_uncond]), pc)
      return v[:b], v[b:]

    return flow.euler_sample(velocity, noise, steps, guidance=guidance, scale=guidance_scale,
                             momentum=c.apg_momentum, eta=c.apg_eta,
                             norm_threshold=c.apg_norm_threshold,
                             return_trajectory=return_trajectory)

  def _sampler_args(self, steps, guidance, guidance_scale):
    c = self.config
    steps = c.sample_steps if steps is None else steps
    guidance = c.guidance if guidance is None else guidance
    scale = c.guidance_scale if guidance_scale is None else guidance_scale
    steps = interface.check_int(steps, "steps", lo=1)
    if guidance not in ("none", "cfg", "apg"):
      raise ValueError(f"guidance: expected one of ('none', 'cfg', 'apg'), got {guidance!r}")
    # NaN or inf would turn every image NaN (past the [0, 1] clip): finite numbers only.
    return steps, guidance, interface.check_float(scale, "guidance_scale")

  def decode_padded(self, ids: jax.Array, keep: jax.Array, *, steps: int | None = None,
                    guidance: str | None = None, guidance_scale: float | None = None,
                    seed: int | jax.Array = 0, noise: jax.Array | None = None) -> jax.Array:
    """ids `[B, R]` (entries >= keep[b] ignored), keep `[B]` int in 1..R -> front-end arrays
    `[B, S, S, C]` at t = 0 (the decoded latents; pixels in [-1, 1] for "identity").

    `noise` (x at t = 1) defaults to N(0, 1) drawn from `seed`. Defaults of the sampler
    arguments: the config's `sample_steps`, `guidance`, `guidance_scale`.
    """
    c = self.config
    interface.check_id_shape(ids, self.token_spec, "ids")
    if ids.shape[1] != c.num_registers:
      raise ValueError(f"ids: expected [B, {c.num_registers}] (padded), got {tuple(ids.shape)}")
    steps, guidance, scale = self._sampler_args(steps, guidance, guidance_scale)
    b = ids.shape[0]
    keep = jnp.broadcast_to(jnp.asarray(keep, jnp.int32), (b,))
    if noise is None:
      key = _noise_key(seed)
      noise = jax.random.normal(key, (b, c.input_size, c.input_size, c.channels), jnp.float32)
    ids = ids.astype(jnp.int32)
    cond, uncond = self.conditions(ids, keep)
    return self.sample(cond, uncond, noise, steps=steps, guidance=guidance,
                       guidance_scale=scale, patch_cond=self.patch_conditions(ids, keep))

  def decode_tokens(self, ids: jax.Array, *, steps: int | None = None,
                    guidance: str | None = None, guidance_scale: float | None = None,
                    seed: int | jax.Array = 0) -> jax.Array:
    """ids `[B, L]`, 1 <= L <= R (any prefix) -> images `[B, S, S, 3]` float32 (unclamped).

    Pads to R with id 0 (never seen: nested dropout replaces positions >= L) and samples with
    `decode_padded`.
    """
    interface.check_id_shape(ids, self.token_spec, "ids")
    b, n = ids.shape
    padded = jnp.zeros((b, self.config.num_registers), jnp.int32).at[:, :n].set(ids)
    return self.decode_prefixes(padded, jnp.full((b,), n, jnp.int32), steps=steps,
                                guidance=guidance, guidance_scale=guidance_scale, seed=seed)

  def decode_prefixes(self, ids: jax.Array, lengths: jax.Array, *, steps: int | None = None,
                      guidance: str | None = None, guidance_scale: float | None = None,
                      seed: int | jax.Array = 0) -> jax.Array:
    """ids `[B, R]` padded, lengths `[B]` in 1..R (image b decodes `ids[b, :lengths[b]]`)
    -> images `[B, S, S, 3]` float32 (unclamped; front-end latents for "latent").

    `decode_tokens` with a per-image length and one compiled function for every length
    (`lengths` may be traced); `jaxtok.Tokenizer.decode` calls this.
    """
    x = self.decode_padded(ids, lengths, steps=steps, guidance=guidance,
                           guidance_scale=guidance_scale, seed=seed)
    return self.from_front(x) if self.config.front_end != "latent" else x

  # ---- training forward ----
  def _train_codes(self, z: jax.Array, codes: jax.Array, key: jax.Array) -> jax.Array:
    """FSQ training options: rounding skipped per image, random codes per token."""
    c = self.config
    k1, k2, k3 = jax.random.split(key, 3)
    levels = jnp.asarray(c.levels, jnp.int32)
    half = (levels // 2).astype(jnp.float32)
    if c.drop_quant_p > 0:
      skip = jax.random.bernoulli(k1, c.drop_quant_p, (z.shape[0], 1, 1))
      codes = jnp.where(skip, fsq_bound(z.astype(jnp.float32), levels) / half, codes)
    if c.token_corruption_p > 0:
      corrupt = jax.random.bernoulli(k2, c.token_corruption_p, z.shape[:2] + (1,))
      rand = jax.random.randint(k3, z.shape[:2], 0, self.quantize.num_codes, jnp.int32)
      codes = jnp.where(corrupt, self.quantize.lookup(rand), codes)
    return codes

  def __call__(self, x: jax.Array, train: bool = False, *,
               rngs: nnx.Rngs | jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """One rectified-flow pass. Returns `(recon, aux)`.

    Args:
      x: images `[B, S, S, 3]` in [0, 1] (identity / vae front end) or front-end latents.
      train: nested dropout, condition dropout and the FSQ training options on.
      rngs: randomness for t, the noise and the training options (default key 0).

    Returns:
      recon: `train=True`: the one-step data estimate x_t - t v (gradient stopped before the
        "vae" front end's decoder: FlexTok trains on the flow loss); `train=False`: the
        reconstruction by the config's default sampler (all R tokens, noise from key 0);
        images for "identity" / "vae" (decoded by the VAE), `x`'s shape for "latent".
      aux: `losses` {`flow`: MSE of v against eps - x0, `quantizer`}, `commitment_loss`,
        `codebook_loss` (0: FSQ), `stats`, `ids` `[B, R]`, `latents` (codes `[B, R, d]`),
        `num_tokens_kept` `[B]`, `t` `[B]`, `velocity`, `target_velocity`; in training with
        `config.repa_layer` set, `repa_features` `[B, P, repa_dim]` (the projected patch
        states of that decoder block, on the grid of the decoder's patches).
    """
    c = self.config
    x0 = self.to_front(x) if c.front_end != "latent" else x.astype(jnp.float32)
    self._check_latents(x0, "x")
    key = (jax.random.key(0) if rngs is None and not train
           else as_key(rngs, "rngs (FlexTok needs randomness for t and the noise)"))
    k_t, k_eps, k_keep, k_cond, k_fsq = jax.random.split(key, 5)
    b = x0.shape[0]
    z = self.encoder(x0)
    codes, qaux = self.quantize(z, train=train)
    if train and (c.drop_quant_p > 0 or c.token_corruption_p > 0):
      codes = self._train_codes(z, codes, k_fsq)
    if train and c.nested_dropout != "none":
      keep = token_drop.keep_lengths(k_keep, b, c.num_registers, "per_example",
                                     c.nested_dropout)
    else:
      keep = jnp.full((b,), c.num_registers, jnp.int32)
    cond_tok = self.decoder.cond_tokens(codes)
    cond = self.decoder.nested_dropout(cond_tok, keep)
    patch_cond = self.decoder.patch_conditions(cond_tok, keep)
    if train and c.cond_dropout_p > 0:
      drop = jax.random.bernoulli(k_cond, c.cond_dropout_p, (b, 1, 1))
      cond = jnp.where(drop, self.decoder.null_condition(cond), cond)
      if patch_cond is not None:
        patch_cond = jnp.where(drop, 0, patch_cond)
    t = flow.sample_timesteps(k_t, b, c.noise_mean, c.noise_std)
    eps = jax.random.normal(k_eps, x0.shape, jnp.float32)
    x_t = flow.add_noise(x0, eps, t)
    repa_features = None
    if train and self.repa_projector is not None:
      v, hidden = self.decoder.velocity_and_hidden(x_t, t, cond, c.repa_layer, patch_cond)
      repa_features = self.repa_projector(hidden)
    else:
      v = self.decoder(x_t, t, cond, patch_cond)
    target = flow.velocity_target(x0, eps)
    loss = jnp.mean(jnp.square(v.astype(jnp.float32) - target))
    if train:
      out = x_t - t[:, None, None, None] * v  # one-step data estimate
      if self.vae is not None:  # Decoded for the logs only: no backward pass through the VAE.
        out = jax.lax.stop_gradient(out)
    else:  # A real reconstruction: the config's default sampler from fixed noise.
      noise = jax.random.normal(jax.random.key(0), x0.shape, jnp.float32)
      out = self.sample(cond, self.decoder.null_condition(cond), noise, steps=c.sample_steps,
                        guidance=c.guidance, guidance_scale=c.guidance_scale,
                        patch_cond=patch_cond)
    out = self.from_front(out) if c.front_end != "latent" else out
    aux = dict(commitment_loss=qaux["commitment_loss"], codebook_loss=qaux["codebook_loss"],
               stats=qaux["stats"], ids=qaux["ids"], latents=codes, num_tokens_kept=keep, t=t,
               velocity=v, target_velocity=target,
               losses={"flow": loss, "quantizer": qaux["loss"]})
    if repa_features is not None:
      aux["repa_features"] = repa_features
    return out, aux
