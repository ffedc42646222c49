"""`VectorQuantizer`: a thin NNX module over `core.py` (docs/design.md §4).

Covers the TiTok quantizer (cosine, gradient-learned codebook, arXiv 2406.07550), the
lucidrains-style VQ (Euclidean / cosine, EMA codebook, dead-code restart, rotation trick,
projections, heads) and the LlamaGen/FQGAN sub-quantizer (entropy loss).

In train mode the quantizer updates variables in place (`code_stats`, `cluster_size`, the EMA
state, and, with dead-code restart, `codebook`). In a functional step either merge once and use
`nnx.value_and_grad(loss_fn)(model)`, or merge inside the differentiated function with
`nnx.merge(graphdef, params, rest, copy=True)` and return `nnx.state(model, nnx.Not(nnx.Param))`
as aux (without copy=True, flax raises TraceContextError for the mutation).
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.stats import CodebookStats, EmaState

_DISTANCES = ("l2", "cosine")
_UPDATES = ("grad", "ema")


class VectorQuantizer(nnx.Module):
  """Nearest-neighbour vector quantizer with a learned codebook.

  Forward: z `[..., dim]` -> (optional in-projection to `num_heads * code_dim`) -> split into
  heads -> (cosine: l2-normalise tokens and codes) -> nearest code per head -> straight-through
  (or rotation trick) -> concat heads -> (optional out-projection) -> `[..., dim]`.

  Losses (means over all elements, float32):
    commitment = beta * mean((sg(zq) - z')^2); codebook = mean((zq - sg(z'))^2) (only added to
    `loss` when update="grad"); entropy = entropy_loss_weight * (H_sample - H_avg) when
    entropy_loss_weight > 0. z' is the (projected, normalised) token.

  Attributes:
    codebook: `[num_codes, code_dim]` (`[num_heads, num_codes, code_dim]` if num_heads > 1).
      An `nnx.Param` when update="grad"; an `EmaState` (not trained by the optimizer) when
      update="ema". Stored raw; cosine distance normalises it on every call.
    num_codes: K.
    code_stats: `CodebookStats` `[H, K]` cumulative counts since the last `reset_stats()`
      (updated in place when train=True).
    cluster_size: `EmaState` `[H, K]` EMA of per-code counts (drives dead-code restart; the
      EMA codebook's Laplace-smoothed cluster sizes when update="ema").
    embed_avg: `EmaState` `[H, K, code_dim]` EMA of per-code sums (update="ema" only).
  """

  def __init__(self, num_codes: int, dim: int, *, code_dim: int | None = None,
               distance: str = "l2", beta: float = 0.25, update: str = "grad",
               ema_decay: float = 0.99, ema_eps: float = 1e-5, num_heads: int = 1,
               rotation_trick: bool = False, dead_code_threshold: float = 0.0,
               entropy_loss_weight: float = 0.0, entropy_temperature: float = 0.01,
               norm_eps: float = 1e-12, chunk_tokens: int | None = None,
               lookup: str = "auto", rngs: nnx.Rngs):
    """Builds the quantizer.

    Args:
      num_codes: codebook size K per head.
      dim: feature size of the input/output.
      code_dim: per-head code size; default dim // num_heads. When num_heads * code_dim !=
        dim, Linear in/out projections (with bias) are added.
      distance: "l2" (squared Euclidean) or "cosine" (l2-normalised tokens and codes,
        x / max(||x||, norm_eps)).
      beta: commitment weight (0.25 in VQ-VAE, arXiv 1711.00937).
      update: "grad" (codebook loss) or "ema" (exponential moving averages).
      ema_decay: decay of the EMA codebook and of `cluster_size`.
      ema_eps: Laplace smoothing epsilon of the EMA update.
      num_heads: heads with separate codebooks; ids get a trailing head axis.
      rotation_trick: use the rotation trick (arXiv 2410.06424) instead of plain
        straight-through.
      dead_code_threshold: in train mode, codes whose `cluster_size` EMA falls below this are
        restarted from random vectors of the current batch (0 disables).
      entropy_loss_weight: weight of the FQGAN/LlamaGen entropy loss (0 disables).
      entropy_temperature: softmax temperature of the entropy loss (0.01 as LlamaGen).
      norm_eps: floor of every l2 normalisation (1e-12 = torch F.normalize, TiTok, FQGAN).
      chunk_tokens: token chunking of the distance computation (see `core.num_chunks`).
      lookup: "onehot", "gather" or "auto" (one-hot on TPU, gather elsewhere); identical
        results (see `core.resolve_lookup`).
      rngs: initialisation randomness; a stream is kept for dead-code restarts.
    """
    if num_codes < 1:
      raise ValueError(f"num_codes must be >= 1, got {num_codes}")
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    if num_heads < 1:
      raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    if distance not in _DISTANCES:
      raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}")
    if update not in _UPDATES:
      raise ValueError(f"update must be one of {_UPDATES}, got {update!r}")
    if code_dim is None:
      if dim % num_heads:
        raise ValueError(
            f"dim must be divisible by num_heads when code_dim is None, got dim={dim}, "
            f"num_heads={num_heads}")
      code_dim = dim // num_heads
    if code_dim < 1:
      raise ValueError(f"code_dim must be >= 1, got {code_dim}")
    if not 0.0 <= ema_decay < 1.0:
      raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    core.resolve_lookup(lookup)  # validates
    if entropy_loss_weight and entropy_temperature <= 0:
      raise ValueError(f"entropy_temperature must be > 0, got {entropy_temperature}")

    self.num_codes = num_codes
    self.dim = dim
    self.code_dim = code_dim
    self.num_heads = num_heads
    self.distance = distance
    self.beta = beta
    self.update = update
    self.ema_decay = ema_decay
    self.ema_eps = ema_eps
    self.rotation_trick = rotation_trick
    self.dead_code_threshold = float(dead_code_threshold)
    self.entropy_loss_weight = float(entropy_loss_weight)
    self.entropy_temperature = float(entropy_temperature)
    self.norm_eps = norm_eps
    self.chunk_tokens = chunk_tokens
    self.lookup_impl = lookup

    inner = num_heads * code_dim
    if inner != dim:
      self.project_in = nnx.Linear(dim, inner, rngs=rngs)
      self.project_out = nnx.Linear(inner, dim, rngs=rngs)
    else:
      self.project_in = None
      self.project_out = None

    # Uniform(-1/K, 1/K), the taming-VQGAN / TiTok initialisation.
    shape = (num_codes, code_dim) if num_heads == 1 else (num_heads, num_codes, code_dim)
    init = jax.random.uniform(rngs.params(), shape, jnp.float32, -1.0 / num_codes,
                              1.0 / num_codes)
    if update == "grad":
      self.codebook = nnx.Param(init)
      self.embed_avg = None
    else:
      self.codebook = EmaState(init)
      # cluster_size starts at 1 so that embed_avg / cluster_size reproduces the codebook.
      self.embed_avg = EmaState(init.reshape(num_heads, num_codes, code_dim))
    self.cluster_size = EmaState(jnp.ones((num_heads, num_codes), jnp.float32))
    self.code_stats = CodebookStats(jnp.zeros((num_heads, num_codes), jnp.float32))
    self.stats_steps = CodebookStats(jnp.zeros((), jnp.int32))
    self.restart_rngs = (nnx.Rngs(restart=rngs.params()) if self.dead_code_threshold > 0
                         else None)

  # --------------------------------------------------------------------------------------
  # Helpers.
  # --------------------------------------------------------------------------------------

  def _codebook_heads(self) -> jax.Array:
    """The codebook as float32 `[H, K, d]`, normalised for cosine distance."""
    cb = jnp.asarray(self.codebook[...], jnp.float32).reshape(
        self.num_heads, self.num_codes, self.code_dim)
    if self.distance == "cosine":
      cb = core.l2_normalize(cb, self.norm_eps)
    return cb

  def _project_in(self, x: jax.Array) -> jax.Array:
    """`[N, dim]` -> normalised per-head tokens `[H, N, d]` float32."""
    if self.project_in is not None:
      x = self.project_in(x)
    x = x.reshape(x.shape[0], self.num_heads, self.code_dim).swapaxes(0, 1)
    if self.distance == "cosine":
      x = core.l2_normalize(x, self.norm_eps)
    return x

  def _project_out(self, x: jax.Array) -> jax.Array:
    """Per-head `[H, N, d]` -> `[N, dim]`."""
    x = x.swapaxes(0, 1).reshape(x.shape[1], self.num_heads * self.code_dim)
    if self.project_out is not None:
      x = self.project_out(x)
    return x

  # --------------------------------------------------------------------------------------
  # Public API.
  # --------------------------------------------------------------------------------------

  def __call__(self, z: jax.Array, train: bool = False, rngs=None,
               weights: jax.Array | None = None) -> tuple[jax.Array, dict]:
    """Quantizes z.

    Args:
      z: `[..., dim]` float (any float dtype; computed in float32).
      train: update statistics, the EMA codebook and restart dead codes (in place).
      rngs: unused (the quantizer interface; restarts draw from the module's own stream).
      weights: optional `[...]` token weights of the usage counts, `stats` and the EMA sums
        (0 = a token that does not count, e.g. one a residual quantizer dropped); the
        outputs and losses are unweighted.

    Returns:
      (zq, aux): zq `[..., dim]` in z's dtype (straight-through / rotation-trick output);
      aux = {"ids": int32 `[...]` (`[..., num_heads]` if num_heads > 1),
             "loss", "commitment_loss", "codebook_loss", "entropy_loss": () float32
               (entropy_loss already weighted; codebook_loss is reported but only added to
               loss when update="grad"),
             "codes": `[..., dim]` float32 quantized vectors without the estimator,
             "stats": {"usage", "perplexity", "entropy_bits", "dead_codes"} for this batch,
             "restarted": `[K]` (`[H, K]`) bool codes restarted by this call; only when
               train=True and dead_code_threshold > 0}.
    """
    core.check_features("z", z, self.dim)
    lead = z.shape[:-1]
    x = jnp.asarray(z, jnp.float32).reshape(-1, self.dim)
    n = x.shape[0]
    xh = self._project_in(x)  # [H, N, d]
    cb = self._codebook_heads()  # [H, K, d]

    use_entropy = self.entropy_loss_weight > 0
    need_sums = train and self.update == "ema"
    if weights is not None:
      if tuple(jnp.shape(weights)) != tuple(lead):
        raise ValueError(f"weights must have shape {tuple(lead)} (z without its channel axis), "
                         f"got {tuple(jnp.shape(weights))}")
      weights = jnp.asarray(weights, jnp.float32).reshape(n)
    assign = jax.vmap(lambda t, c: core.assign_codes(
        t, c, chunk_tokens=self.chunk_tokens,
        entropy_temperature=self.entropy_temperature if use_entropy else None,
        with_sums=need_sums, lookup=self.lookup_impl, weights=weights))(xh, cb)

    codes = assign.codes  # [H, N, d]
    commitment, codebook_loss = core.vq_losses(xh, codes, self.beta)
    if use_entropy:
      ent = jnp.mean(jax.vmap(lambda e, p: core.entropy_loss(e, p, n))(
          assign.entropy_sum, assign.prob_sum))
      entropy = self.entropy_loss_weight * ent
    else:
      entropy = jnp.zeros((), jnp.float32)
    loss = commitment + entropy
    if self.update == "grad":
      loss = loss + codebook_loss

    if self.rotation_trick:
      out = core.rotation_trick(xh, codes, eps=self.norm_eps)
    else:
      out = core.straight_through(xh, codes)
    zq = self._project_out(out).reshape(*lead, self.dim).astype(z.dtype)
    plain = self._project_out(jax.lax.stop_gradient(codes)).reshape(*lead, self.dim)

    ids = assign.ids.T  # [N, H]
    ids = ids.reshape(*lead) if self.num_heads == 1 else ids.reshape(*lead, self.num_heads)
    stats = core.code_stats(assign.counts)
    if self.num_heads > 1:
      for h in range(self.num_heads):
        for k, v in core.code_stats(assign.counts[h]).items():
          stats[f"{k}/{h}"] = v

    restarted = self._train_updates(xh, assign) if train else None

    aux = {
        "ids": ids,
        "loss": loss,
        "commitment_loss": commitment,
        "codebook_loss": codebook_loss,
        "entropy_loss": entropy,
        "codes": plain,
        "stats": stats,
    }
    if restarted is not None:
      aux["restarted"] = restarted if self.num_heads > 1 else restarted[0]
    return zq, aux

  def _train_updates(self, xh: jax.Array, assign: core.Assignment) -> jax.Array | None:
    """In-place statistics, EMA codebook and dead-code updates (train mode).

    Returns:
      `[H, K]` bool mask of the codes restarted in this step, or None when restarts are off.
    """
    counts = assign.counts  # [H, K]
    self.code_stats[...] = self.code_stats[...] + counts
    self.stats_steps[...] = self.stats_steps[...] + 1

    cs = self.cluster_size[...]
    if self.update == "ema":
      cs, ea, cb = jax.vmap(lambda c, e, k, s: core.ema_update(
          c, e, k, s, decay=self.ema_decay, eps=self.ema_eps,
          normalize_eps=self.norm_eps if self.distance == "cosine" else None))(
              cs, self.embed_avg[...], counts, assign.sums)
    else:
      cs = cs + (1.0 - self.ema_decay) * (counts - cs)
      ea = None
      cb = jnp.asarray(self.codebook[...], jnp.float32).reshape(
          self.num_heads, self.num_codes, self.code_dim)

    dead = None
    if self.dead_code_threshold > 0:
      dead = cs < self.dead_code_threshold  # [H, K]
      keys = jax.random.split(self.restart_rngs.restart(), self.num_heads)
      fresh = jax.vmap(core.restart_rows)(dead, xh, keys)  # [H, K, d]
      cb = jnp.where(dead[..., None], fresh, cb)
      cs = jnp.where(dead, self.dead_code_threshold, cs)
      if ea is not None:
        ea = jnp.where(dead[..., None], fresh * self.dead_code_threshold, ea)

    self.cluster_size[...] = jax.lax.stop_gradient(cs)
    if ea is not None:
      self.embed_avg[...] = jax.lax.stop_gradient(ea)
    if self.update == "ema" or self.dead_code_threshold > 0:
      self.codebook[...] = jax.lax.stop_gradient(cb).reshape(self.codebook[...].shape).astype(
          self.codebook[...].dtype)
    return dead

  def lookup(self, ids: jax.Array) -> jax.Array:
    """Code vectors for ids.

    Args:
      ids: int `[...]` (`[..., num_heads]` when num_heads > 1), values in [0, num_codes).

    Returns:
      `[..., dim]` float32 (cosine distance: the re-normalised codes, then the out-projection).
    """
    core.check_ids("ids", ids, self.num_codes,
                   last_dim=self.num_heads if self.num_heads > 1 else None)
    ids = jnp.asarray(ids, jnp.int32)
    lead = ids.shape if self.num_heads == 1 else ids.shape[:-1]
    flat = ids.reshape(-1, self.num_heads).T  # [H, N]
    cb = self._codebook_heads()
    codes = jax.vmap(core.one_hot_lookup)(flat, cb)  # [H, N, d]
    return self._project_out(codes).reshape(*lead, self.dim)

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Usage statistics of all batches seen in train mode since the last `reset_stats()`."""
    return core.code_stats(self.code_stats[...])

  def reset_stats(self) -> None:
    """Zeroes the running statistics."""
    self.code_stats[...] = jnp.zeros_like(self.code_stats[...])
    self.stats_steps[...] = jnp.zeros_like(self.stats_steps[...])
