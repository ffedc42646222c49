"""TiTok: a 1D image tokenizer (arXiv 2406.07550), in Flax NNX.

An image is cut into p x p patches; a ViT encoder runs over [cls, patches, K learned latent
tokens] and keeps the K latent positions, which are projected to `token_size` channels and
vector-quantized into K ids. A ViT decoder runs over [cls, g*g mask tokens, K embedded latents]
and turns the g*g mask positions into an image, through one of two heads:

- "two_stage" (the released S-128 / B-64 / L-32 and all One-D-Piece models): logits over the
  1024 entries of the MaskGIT-VQGAN codebook; softmax; soft code map (probabilities x codebook);
  the MaskGIT-VQGAN conv pixel decoder. Stage 1 trains the logits with cross-entropy against
  MaskGIT proxy codes (`aux["logits"]`).
- "pixel" (BL-64 / BL-128 / SL-256 VQ-8k and the VAE models): p*p*3 values per mask position,
  unpatchified, then a 3x3 conv.

`legacy_projection=True` reproduces the released legacy weights' latent projection: the
`[B, K, W]` latents are reinterpreted as `[B, W, K]` by a raw reshape (no transpose) before the
1x1 projection -- an upstream bug that the released weights were trained with.

`quantize_mode="vae"` replaces VQ by a diagonal Gaussian posterior over `token_size` continuous
channels (LL-32 / BL-64 / BL-128 VAE): `aux["kl_loss"]`, and `encode` returns the posterior mean.

One-D-Piece (arXiv 2501.10064) is this model with `tail_token_drop=True` (see one_d_piece.py).

Images are NHWC float32 in [0, 1] (no mean/std normalization, as the released models).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers import layers
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig, MaskGITDecoder

# ViT sizes of the official code (width, depth, heads). The `tiny*` entries are the sizes the
# parity fixtures were generated with (tests/fixtures/titok/README.md); they are not released.
MODEL_SIZES: dict[str, tuple[int, int, int]] = {
    "small": (512, 8, 8),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
    "tiny": (64, 2, 4),
    "tiny96": (96, 2, 6),
    "tiny48": (48, 2, 3),
}

HEADS = ("two_stage", "pixel")
QUANTIZE_MODES = ("vq", "vae")
QUANTIZERS = ("vq", "factorized_vq")
TAIL_DROP_MODES = ("per_step", "per_example")


@dataclasses.dataclass(kw_only=True)
class TiTokConfig:
  """Everything a TiTok model needs; JSON-serializable through `to_dict`/`from_dict`.

  Attributes:
    image_size: square input side S.
    enc_patch_size, dec_patch_size: patch sides (S must be divisible by both).
    enc_width, enc_depth, enc_heads: encoder ViT size.
    dec_width, dec_depth, dec_heads: decoder ViT size.
    mlp_ratio: MLP hidden width / ViT width.
    num_latent_tokens: K, tokens per image.
    token_size: C, channels per token (VAE: channels of the posterior mean).
    codebook_size: N, VQ codebook entries.
    use_l2_norm: cosine VQ (l2-normalized z and codes), as the legacy models.
    commitment_cost: VQ beta.
    quantize_mode: "vq" or "vae" (diagonal Gaussian, continuous tokens).
    quantizer: "vq" (one codebook) or "factorized_vq" (`num_sub_codebooks` codebooks).
    num_sub_codebooks: k for "factorized_vq".
    quantizer_kwargs: extra keyword arguments for the quantizer (e.g. `{"update": "ema"}`).
    legacy_projection: raw-reshape latent projection of the released legacy weights.
    head: "two_stage" (MaskGIT logits + pixel decoder) or "pixel".
    pixel_codebook_size: MaskGIT codebook entries (two-stage head; 1024 when released).
    pixel_decoder: MaskGIT pixel decoder plan (two-stage head).
    finetune_decoder: official stage-2 flag; a training hint that the encoder and quantizer
      are frozen (the model computes the same things either way).
    tail_token_drop: One-D-Piece tail-token-drop when `train=True`.
    tail_token_drop_mode: "per_step" (one kept length per call, as One-D-Piece) or
      "per_example" (one length per image).
    scan_unroll: `lax.scan` unroll of the ViT layer loop (speed knob; same numbers).
    init_std: initialisation only (no effect on loaded weights or the forward pass): std of
      the trunc-normal init of the ViT Linear/Conv kernels, 0.02 as the official code; None
      -> LeCun fan-in scaling (1/sqrt(fan_in)) for the patch embedding, transformers, latent
      projection and decoder embedding (the decoder's output head keeps 0.02), which small
      widths (the `tiny` variant) need to leave the mean-image solution in a short run.
  """
  image_size: int = 256
  enc_patch_size: int = 16
  dec_patch_size: int = 16
  enc_width: int = 512
  enc_depth: int = 8
  enc_heads: int = 8
  dec_width: int = 512
  dec_depth: int = 8
  dec_heads: int = 8
  mlp_ratio: float = 4.0
  num_latent_tokens: int = 128
  token_size: int = 12
  codebook_size: int = 4096
  use_l2_norm: bool = True
  commitment_cost: float = 0.25
  quantize_mode: str = "vq"
  quantizer: str = "vq"
  num_sub_codebooks: int = 1
  quantizer_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  legacy_projection: bool = True
  head: str = "two_stage"
  pixel_codebook_size: int = 1024
  pixel_decoder: MaskGITConfig | None = None
  finetune_decoder: bool = True
  tail_token_drop: bool = False
  tail_token_drop_mode: str = "per_step"
  scan_unroll: int = 1
  init_std: float | None = layers.VIT_INIT_STD

  def __post_init__(self):
    if isinstance(self.pixel_decoder, dict):
      self.pixel_decoder = MaskGITConfig(**self.pixel_decoder)
    if self.head == "two_stage" and self.pixel_decoder is None:
      self.pixel_decoder = MaskGITConfig()
    if self.head == "pixel":
      self.pixel_decoder = None
    self.quantizer_kwargs = dict(self.quantizer_kwargs)
    self.validate()

  def validate(self) -> None:
    """Raises ValueError naming the first inconsistent field."""
    def need(cond, name, expected):
      if not cond:
        raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
    need(self.head in HEADS, "head", f"one of {HEADS}")
    need(self.quantize_mode in QUANTIZE_MODES, "quantize_mode", f"one of {QUANTIZE_MODES}")
    need(self.quantizer in QUANTIZERS, "quantizer", f"one of {QUANTIZERS}")
    need(self.tail_token_drop_mode in TAIL_DROP_MODES, "tail_token_drop_mode",
         f"one of {TAIL_DROP_MODES}")
    for p in ("enc_patch_size", "dec_patch_size"):
      need(getattr(self, p) > 0 and self.image_size % getattr(self, p) == 0, p,
           f"a positive divisor of image_size={self.image_size}")
    need(self.enc_width % self.enc_heads == 0, "enc_heads", f"a divisor of {self.enc_width}")
    need(self.dec_width % self.dec_heads == 0, "dec_heads", f"a divisor of {self.dec_width}")
    need(self.num_latent_tokens >= 1, "num_latent_tokens", ">= 1")
    need(self.token_size >= 1, "token_size", ">= 1")
    need(self.num_sub_codebooks >= 1, "num_sub_codebooks", ">= 1")
    need(self.init_std is None or self.init_std > 0, "init_std", "None or > 0")
    if self.quantizer == "factorized_vq":
      need(self.token_size % self.num_sub_codebooks == 0, "num_sub_codebooks",
           f"a divisor of token_size={self.token_size}")
    if self.head == "two_stage":
      grid = self.image_size // self.dec_patch_size
      f = self.pixel_decoder.downsample_factor
      need(grid * f == self.image_size, "dec_patch_size",
           f"the MaskGIT downsample factor {f} (two-stage head decodes a g x g code map)")

  # ---- derived sizes ----
  @property
  def enc_grid(self) -> int:
    return self.image_size // self.enc_patch_size

  @property
  def dec_grid(self) -> int:
    return self.image_size // self.dec_patch_size

  @property
  def latent_channels(self) -> int:
    """Channels out of the encoder projection (2C for the VAE: mean and log-variance)."""
    return 2 * self.token_size if self.quantize_mode == "vae" else self.token_size

  # ---- (de)serialization ----
  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    if d["pixel_decoder"] is not None:
      d["pixel_decoder"]["channel_mult"] = list(d["pixel_decoder"]["channel_mult"])
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TiTokConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise ValueError(f"config: unknown TiTokConfig fields {unknown}")
    return cls(**d)

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_official(cls, cfg: dict[str, Any] | str, *,
                    one_d_piece: bool | None = None) -> "TiTokConfig":
    """Reads the official 1d-tokenizer / One-D-Piece config (config.json / yaml as a dict).

    Args:
      cfg: `{"model": {"vq_model": {...}}, "dataset": {"preprocessing": {"crop_size": S}}}`
        (or a JSON string of it). Fixture-only keys `pixel_codebook_size` and `pixel_decoder`
        are honoured.
      one_d_piece: force One-D-Piece (tail-token-drop) on/off; None detects it from
        `model.type == "one_d_piece"` or the One-D-Piece-only key `strict_length_assertion`.
    """
    if isinstance(cfg, str):
      cfg = json.loads(cfg)
    if "model" not in cfg or "vq_model" not in cfg["model"]:
      raise ValueError("cfg: expected the official schema {'model': {'vq_model': {...}}, ...}, "
                       f"got top-level keys {sorted(cfg)}")
    vq = cfg["model"]["vq_model"]
    size = (cfg.get("dataset", {}).get("preprocessing", {}).get("crop_size", 256))

    def vit(key):
      name = vq.get(key, "small")
      if name not in MODEL_SIZES:
        raise ValueError(f"{key}: expected one of {sorted(MODEL_SIZES)}, got {name!r}")
      return MODEL_SIZES[name]

    ew, ed, eh = vit("vit_enc_model_size")
    dw, dd, dh = vit("vit_dec_model_size")
    if one_d_piece is None:
      one_d_piece = (cfg["model"].get("type") == "one_d_piece"
                     or "strict_length_assertion" in vq)
    mode = vq.get("quantize_mode", "vq")
    # One-D-Piece has no is_legacy flag; its code always takes the legacy paths.
    legacy = bool(vq.get("is_legacy", True))
    pixel_cfg = None
    if legacy:
      pixel_cfg = MaskGITConfig.from_official(vq.get("pixel_decoder", {}),
                                              codebook_size=vq.get("pixel_codebook_size", 1024))
    return cls(
        image_size=int(size),
        enc_patch_size=int(vq.get("vit_enc_patch_size", 16)),
        dec_patch_size=int(vq.get("vit_dec_patch_size", 16)),
        enc_width=ew, enc_depth=ed, enc_heads=eh,
        dec_width=dw, dec_depth=dd, dec_heads=dh,
        num_latent_tokens=int(vq["num_latent_tokens"]),
        token_size=int(vq["token_size"]),
        codebook_size=int(vq.get("codebook_size", 4096)),
        use_l2_norm=bool(vq.get("use_l2_norm", False)),
        commitment_cost=float(vq.get("commitment_cost", 0.25)),
        quantize_mode=mode,
        legacy_projection=legacy,
        head="two_stage" if legacy else "pixel",
        pixel_codebook_size=int(vq.get("pixel_codebook_size", 1024)),
        pixel_decoder=pixel_cfg,
        finetune_decoder=bool(vq.get("finetune_decoder", True)),
        tail_token_drop=bool(one_d_piece),
    )


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
                                          unroll=config.scan_unroll, rngs=rngs, init_std=init)
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
  (2W_d -> N_pix); pixel head `ffn_0` (W_d -> p*p*3) and `conv_out` (3x3, 3 -> 3).
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
                                          unroll=config.scan_unroll, rngs=rngs, init_std=init)
    self.ln_post = layers.layer_norm(w, rngs=rngs)
    if config.head == "two_stage":
      self.ffn_0 = layers.vit_linear(w, 2 * w, rngs=rngs, init_std=head_init)
      self.ffn_2 = layers.vit_linear(2 * w, config.pixel_codebook_size, rngs=rngs,
                                     init_std=head_init)
      self.conv_out = None
    else:
      p = config.dec_patch_size
      self.ffn_0 = layers.vit_linear(w, p * p * 3, rngs=rngs, init_std=head_init)
      self.ffn_2 = None
      self.conv_out = nnx.Conv(3, 3, (3, 3), padding="SAME",
                               kernel_init=layers.vit_kernel_init(head_init),
                               bias_init=nnx.initializers.zeros_init(), rngs=rngs)

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
    x = self.decoder_embed(z) + self.latent_token_positional_embedding[:n]
    w = x.shape[-1]
    masks = jnp.broadcast_to(self.mask_token[...], (b, g2, w))
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
    ffn = layers.pixel_unpatchify(self.ffn_0(h), self.config.dec_grid, self.config.dec_patch_size)
    return ffn, self.conv_out(ffn)


class TiTok(nnx.Module):
  """TiTok / One-D-Piece tokenizer (contract #2).

  Methods:
    encode(images [B,S,S,3] float) -> ids int32 [B, K] (VAE: posterior mean [B, K, C]).
    encode_latents(images, *, sample=False, rngs=None) -> [B, K, C] float32.
    decode_tokens(ids [B, L]) -> images float32 [B, S, S, 3] (unclamped), 1 <= L <= K.
    decode_latents(z [B, L, C], *, lengths=None) -> (images, head_aux).
    __call__(images, train=False, *, rngs=None) -> (recon, aux).
  """

  def __init__(self, config: TiTokConfig, *, rngs: nnx.Rngs):
    if not isinstance(config, TiTokConfig):
      raise ValueError(f"config: expected a TiTokConfig, got {type(config).__name__}")
    self.config = config
    self.encoder = TiTokEncoder(config, rngs=rngs)
    self.quantize = _build_quantizer(config, rngs) if config.quantize_mode == "vq" else None
    self.decoder = TiTokDecoder(config, rngs=rngs)
    if config.head == "two_stage":
      pc = config.pixel_decoder
      self.pixel_codebook = layers.normal_param((config.pixel_codebook_size, pc.z_channels),
                                                1.0 / config.pixel_codebook_size, rngs)
      self.pixel_decoder = MaskGITDecoder(pc, rngs=rngs)
    else:
      self.pixel_codebook = None
      self.pixel_decoder = None

  # ---- sizes ----
  @property
  def num_tokens(self) -> int:
    return self.config.num_latent_tokens

  @property
  def codebook_size(self) -> int:
    return self.config.codebook_size

  @property
  def image_size(self) -> int:
    return self.config.image_size

  # ---- input checks (static shapes only; safe under jit) ----
  def _check_images(self, images: jax.Array) -> jax.Array:
    s = self.config.image_size
    if images.ndim != 4 or tuple(images.shape[1:]) != (s, s, 3):
      raise ValueError(f"images: expected [B, {s}, {s}, 3] (NHWC), got shape "
                       f"{tuple(images.shape)}")
    if not jnp.issubdtype(images.dtype, jnp.floating):
      raise ValueError(f"images: expected float in [0, 1], got dtype {images.dtype}")
    return images.astype(jnp.float32)

  def _check_prefix(self, n: int, name: str) -> None:
    k = self.config.num_latent_tokens
    if not 1 <= n <= k:
      raise ValueError(f"{name}: expected a prefix length in 1..{k}, got {n}")

  # ---- encoder side ----
  def _posterior(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    mean, logvar = jnp.split(z, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def encode_latents(self, images: jax.Array, *, sample: bool = False,
                     rngs: nnx.Rngs | jax.Array | None = None) -> jax.Array:
    """Continuous token vectors `[B, K, C]` float32.

    VQ: the quantized (codebook) vectors; VAE: the posterior mean, or a sample with
    `sample=True` (needs `rngs`).
    """
    z = self.encoder(self._check_images(images))
    if self.quantize is not None:
      zq, _ = self.quantize(z, train=False)
      return zq
    mean, logvar = self._posterior(z)
    if not sample:
      return mean
    key = _as_key(rngs, "rngs (needed to sample the VAE posterior)")
    return mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)

  def encode(self, images: jax.Array) -> jax.Array:
    """`[B, S, S, 3]` float in [0, 1] -> ids `[B, K]` int32 (`[B, K, k]` factorized; VAE: the
    posterior mean `[B, K, C]` float32, since its tokens are continuous)."""
    z = self.encoder(self._check_images(images))
    if self.quantize is None:
      return self._posterior(z)[0]
    _, aux = self.quantize(z, train=False)
    return aux["ids"].astype(jnp.int32)

  # ---- decoder side ----
  def lookup(self, ids: jax.Array) -> jax.Array:
    """ids `[B, L]` (`[B, L, k]` factorized) -> token vectors `[B, L, C]`."""
    if self.quantize is None:
      raise ValueError("ids: this is a VAE TiTok (continuous tokens); use decode_latents")
    return self.quantize.lookup(ids)

  def decode_latents(self, z: jax.Array, *, lengths: jax.Array | None = None
                     ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Token vectors `[B, L, C]` -> (images `[B, S, S, 3]` unclamped, head outputs).

    Head outputs: two-stage: `"logits"` `[B, g, g, N_pix]`, `"pixel_decoder_input"`
    `[B, g, g, Z]`; pixel head: `"ffn_out"` `[B, S, S, 3]`.
    """
    if z.ndim != 3 or z.shape[-1] != self.config.token_size:
      raise ValueError(f"z: expected [B, L, {self.config.token_size}], got {tuple(z.shape)}")
    self._check_prefix(z.shape[1], "z (token axis)")
    h = self.decoder.hidden(z.astype(jnp.float32), lengths)
    if self.config.head == "two_stage":
      logits = self.decoder.logits(h)
      soft = jax.nn.softmax(logits, axis=-1) @ self.pixel_codebook[...]
      return self.pixel_decoder(soft), {"logits": logits, "pixel_decoder_input": soft}
    ffn, img = self.decoder.pixel_head(h)
    return img, {"ffn_out": ffn}

  def decode_tokens(self, ids: jax.Array) -> jax.Array:
    """ids `[B, L]` int, 1 <= L <= K (a prefix for One-D-Piece) -> `[B, S, S, 3]` float32.

    VAE models take the continuous tokens `[B, L, C]` float instead.
    """
    if self.quantize is None:
      return self.decode_latents(jnp.asarray(ids))[0]
    want = 3 if self.config.quantizer == "factorized_vq" else 2
    if ids.ndim != want:
      raise ValueError(f"ids: expected {'[B, L, k]' if want == 3 else '[B, L]'} integer ids, "
                       f"got shape {tuple(ids.shape)}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"ids: expected an integer dtype, got {ids.dtype}")
    self._check_prefix(ids.shape[1], "ids (token axis)")
    return self.decode_latents(self.lookup(ids))[0]

  # ---- training forward ----
  def __call__(self, images: jax.Array, train: bool = False, *,
               rngs: nnx.Rngs | jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, Any]]:
    """Encode, quantize, decode. Returns `(recon [B, S, S, 3], aux)`.

    aux: `quantizer_loss`, `commitment_loss`, `codebook_loss` (scalars; 0 for the VAE),
    `ids` (VQ), `stats` (quantizer statistics), `latents` `[B, K, C]` (quantized / sampled),
    `num_tokens_kept` `[B]` int32, plus `logits` `[B, g, g, N_pix]` for the two-stage head and
    `kl_loss` (sum over tokens and channels, mean over the batch) for the VAE.
    With `train=True`, tail-token-drop (config) and VAE sampling draw from `rngs`.
    """
    images = self._check_images(images)
    b, k = images.shape[0], self.config.num_latent_tokens
    z = self.encoder(images)
    zero = jnp.zeros((), jnp.float32)
    aux: dict[str, Any] = {}
    key = None
    if train and (self.config.tail_token_drop or self.quantize is None):
      key = _as_key(rngs, "rngs (train=True needs randomness for tail-token-drop / VAE)")
    if self.quantize is not None:
      zq, qaux = self.quantize(z, train=train)
      aux.update(quantizer_loss=qaux["loss"], commitment_loss=qaux["commitment_loss"],
                 codebook_loss=qaux["codebook_loss"], ids=qaux["ids"],
                 stats=qaux.get("stats", {}))
    else:
      mean, logvar = self._posterior(z)
      if train:
        key, sub = jax.random.split(key)
        zq = mean + jnp.exp(0.5 * logvar) * jax.random.normal(sub, mean.shape, mean.dtype)
      else:
        zq = mean
      kl = 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2))
      aux.update(quantizer_loss=zero, commitment_loss=zero, codebook_loss=zero,
                 kl_loss=jnp.mean(kl), stats={}, posterior_mean=mean, posterior_logvar=logvar)
    lengths = None
    if train and self.config.tail_token_drop:
      lengths = tail_drop_lengths(key, b, k, self.config.tail_token_drop_mode)
    recon, head = self.decode_latents(zq, lengths=lengths)
    aux["latents"] = zq
    aux["num_tokens_kept"] = (jnp.full((b,), k, jnp.int32) if lengths is None else lengths)
    if "logits" in head:
      aux["logits"] = head["logits"]
    return recon, aux


def tail_drop_lengths(key: jax.Array, batch: int, num_tokens: int,
                      mode: str = "per_step") -> jax.Array:
  """Kept token counts `[batch]` int32, uniform in 1..num_tokens (One-D-Piece, 2501.10064).

  "per_step": one length shared by the batch (as the official code); "per_example": one each.
  """
  if mode == "per_step":
    n = jax.random.randint(key, (), 1, num_tokens + 1, jnp.int32)
    return jnp.full((batch,), n, jnp.int32)
  if mode == "per_example":
    return jax.random.randint(key, (batch,), 1, num_tokens + 1, jnp.int32)
  raise ValueError(f"mode: expected one of {TAIL_DROP_MODES}, got {mode!r}")


def _as_key(rngs, what: str) -> jax.Array:
  if rngs is None:
    raise ValueError(f"{what}: expected an nnx.Rngs or a jax PRNG key, got None")
  if isinstance(rngs, nnx.Rngs):
    return rngs.default()
  return rngs


def _build_quantizer(config: TiTokConfig, rngs: nnx.Rngs) -> nnx.Module:
  from jaxtok.tokenizers import quantizers  # pylint: disable=g-import-not-at-top
  distance = "cosine" if config.use_l2_norm else "l2"
  kw = dict(distance=distance, beta=config.commitment_cost)
  kw.update(config.quantizer_kwargs)
  if config.quantizer == "vq":
    return quantizers.VectorQuantizer(config.codebook_size, config.token_size, **kw, rngs=rngs)
  # k sub-codebooks of token_size / k channels each, so the decoder still sees token_size.
  return quantizers.FactorizedVectorQuantizer(
      config.codebook_size, config.token_size, num_factors=config.num_sub_codebooks,
      code_dim=config.token_size // config.num_sub_codebooks, **kw, rngs=rngs)


# ---------------------------------------------------------------------------------------------
# Released configurations (bytedance/1d-tokenizer configs/infer/*.yaml) and a CPU-sized one.
# ---------------------------------------------------------------------------------------------

def _vit_sizes(enc: str, dec: str) -> dict[str, int]:
  ew, ed, eh = MODEL_SIZES[enc]
  dw, dd, dh = MODEL_SIZES[dec]
  return dict(enc_width=ew, enc_depth=ed, enc_heads=eh, dec_width=dw, dec_depth=dd, dec_heads=dh)


def _legacy(enc: str, dec: str, k: int) -> TiTokConfig:
  """Two-stage legacy TiTok: 4096 x 12 cosine codebook, MaskGIT pixel decoder."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=12,
                     codebook_size=4096, use_l2_norm=True, legacy_projection=True,
                     head="two_stage", finetune_decoder=True)


def _vq8k(enc: str, dec: str, k: int) -> TiTokConfig:
  """Single-stage TiTok VQ: 8192 x 64 codebook, no l2, pixel head."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=64,
                     codebook_size=8192, use_l2_norm=False, legacy_projection=False,
                     head="pixel", finetune_decoder=False)


def _vae(enc: str, dec: str, k: int) -> TiTokConfig:
  """Continuous TiTok: diagonal Gaussian with 16 channels per token, pixel head."""
  return TiTokConfig(**_vit_sizes(enc, dec), num_latent_tokens=k, token_size=16,
                     quantize_mode="vae", use_l2_norm=False, legacy_projection=False,
                     head="pixel", finetune_decoder=False)


VARIANTS: dict[str, TiTokConfig] = {
    "S-128": _legacy("small", "small", 128),
    "B-64": _legacy("base", "base", 64),
    "L-32": _legacy("large", "large", 32),
    "BL-64-VQ": _vq8k("base", "large", 64),
    "BL-128-VQ": _vq8k("base", "large", 128),
    "SL-256-VQ": _vq8k("small", "large", 256),
    "LL-32-VAE": _vae("large", "large", 32),
    "BL-64-VAE": _vae("base", "large", 64),
    "BL-128-VAE": _vae("base", "large", 128),
    # Sized to train on 2 CPU cores: 64x64 images, 8x8 patches (8x8 grid), 32 tokens of a
    # 1024 x 16 cosine codebook, width-128 ViTs, single-stage pixel head. Not the official
    # init: LeCun-scaled kernels (the 0.02 of the wide models leaves a width-128 ViT at the
    # mean-image saddle) and the FQGAN/LlamaGen entropy loss against codebook collapse.
    "tiny": TiTokConfig(image_size=64, enc_patch_size=8, dec_patch_size=8,
                        enc_width=128, enc_depth=2, enc_heads=4,
                        dec_width=128, dec_depth=2, dec_heads=4,
                        num_latent_tokens=32, token_size=16, codebook_size=1024,
                        use_l2_norm=True, legacy_projection=False, head="pixel",
                        finetune_decoder=False, init_std=None,
                        quantizer_kwargs={"entropy_loss_weight": 0.1}),
}

# Parameter counts published with the released models (TiTok arXiv 2406.07550, Table 6 /
# the official model cards), including the MaskGIT pixel decoder of the two-stage models.
PUBLISHED_PARAMS: dict[str, float] = {
    "S-128": 83.7e6,
    "B-64": 204.8e6,
    "L-32": 641.1e6,
}


def get_config(name: str) -> TiTokConfig:
  """A fresh copy of `VARIANTS[name]` (safe to mutate)."""
  if name not in VARIANTS:
    raise ValueError(f"name: expected one of {sorted(VARIANTS)}, got {name!r}")
  return TiTokConfig.from_dict(VARIANTS[name].to_dict())
