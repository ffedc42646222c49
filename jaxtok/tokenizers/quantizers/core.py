"""The one quantizer core shared by every jaxtok quantizer (docs/design.md §4).

Pure functions over float32 arrays: distances, nearest-code assignment (optionally chunked so
that the `[N, K]` distance matrix never materialises at once), one-hot lookups and counts,
straight-through and rotation-trick estimators, codebook/commitment/entropy/disentanglement
losses, usage statistics, the EMA codebook update and dead-code restart. Modules in `vq.py`,
`factorized.py` and `fsq.py` are thin wrappers; none re-implements any of this.

Rules that keep the results identical on one device and on a sharded batch:
  * lookups and counts are one-hot matmuls / sums on TPU (MXU) and gathers / scatter-adds
    elsewhere (identical results, `resolve_lookup`); never a psum;
  * every reduction is over the global token axis inside `jax.jit`, so GSPMD reduces globally;
  * all math is float32 whatever the input dtype (bf16 training included).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxtok.platform import target_platform

HIGHEST = jax.lax.Precision.HIGHEST

# Largest number of [token, code] distance entries computed in one piece when chunking is
# automatic: 2**23 float32 = 32 MiB. A 65536-token batch against a 16384-code codebook
# (4 GiB unchunked) then runs in 128 chunks of 512 tokens. On CPU small chunks were also the
# fastest (cache-resident; benchmarks/quantizers.py); pass chunk_tokens to override.
DEFAULT_MAX_DISTANCE_ELEMENTS = 2**23


# ----------------------------------------------------------------------------------------
# Input checks (Python-side, on shapes/dtypes; on values only for concrete arrays).
# ----------------------------------------------------------------------------------------


def is_concrete(x) -> bool:
  """True when `x` holds values (not a tracer inside jit/grad/vmap)."""
  return not isinstance(x, jax.core.Tracer)


def check_features(name: str, x, dim: int, *, min_rank: int = 2) -> None:
  """Raises ValueError unless `x` is a float array `[..., dim]` of rank >= min_rank.

  Values are checked (all finite) only when `x` is concrete.
  """
  if not hasattr(x, "shape") or not hasattr(x, "dtype"):
    raise ValueError(f"{name} must be a float array [..., {dim}], got {type(x).__name__}")
  if x.ndim < min_rank or x.shape[-1] != dim:
    raise ValueError(
        f"{name} must have shape [..., {dim}] (rank >= {min_rank}), got shape {tuple(x.shape)}")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"{name} must be a floating-point array [..., {dim}], got dtype {x.dtype}")
  if is_concrete(x) and not bool(np.all(np.isfinite(np.asarray(x, dtype=np.float32)))):
    raise ValueError(f"{name} [..., {dim}] must be finite, got NaN or inf values")


def check_ids(name: str, ids, num_codes: int, *, last_dim: int | None = None) -> None:
  """Raises ValueError unless `ids` is an integer array with values in [0, num_codes)."""
  want = f"[..., {last_dim}]" if last_dim is not None else "[...]"
  if not hasattr(ids, "shape") or not hasattr(ids, "dtype"):
    raise ValueError(f"{name} must be an int array {want}, got {type(ids).__name__}")
  if not jnp.issubdtype(ids.dtype, jnp.integer):
    raise ValueError(f"{name} must be an integer array {want}, got dtype {ids.dtype}")
  if last_dim is not None and (ids.ndim < 1 or ids.shape[-1] != last_dim):
    raise ValueError(f"{name} must have shape {want}, got shape {tuple(ids.shape)}")
  if is_concrete(ids) and ids.size:
    arr = np.asarray(ids)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_codes:
      raise ValueError(
          f"{name} must lie in [0, {num_codes}), got values in [{lo}, {hi}]")


# ----------------------------------------------------------------------------------------
# Elementary maths.
# ----------------------------------------------------------------------------------------


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) over the last axis (torch F.normalize semantics)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


def pairwise_sq_distances(z: jax.Array, codebook: jax.Array, *, precision=HIGHEST) -> jax.Array:
  """Squared Euclidean distances in the expanded form ||z||^2 + ||c||^2 - 2 z.c.

  Args:
    z: `[N, d]` float32.
    codebook: `[K, d]` float32.
    precision: matmul precision (HIGHEST keeps f32 accuracy on TPU/GPU too).

  Returns:
    `[N, K]` float32. The expanded form (same order of operations as the official TiTok,
    LlamaGen/FQGAN and lucidrains code) keeps argmin ties resolved as they resolve them.
  """
  zz = jnp.sum(jnp.square(z), axis=-1, keepdims=True)
  cc = jnp.sum(jnp.square(codebook), axis=-1)[None, :]
  return zz + cc - 2.0 * jnp.dot(z, codebook.T, precision=precision)


def one_hot_lookup(ids: jax.Array, codebook: jax.Array, *, precision=HIGHEST) -> jax.Array:
  """Code vectors by a one-hot matmul: `[...]` int ids, `[K, d]` codebook -> `[..., d]`.

  With HIGHEST precision the product 1.0 * c is exact, so this equals `codebook[ids]`.
  """
  one_hot = jax.nn.one_hot(ids, codebook.shape[0], dtype=codebook.dtype)
  return jnp.dot(one_hot, codebook, precision=precision)


def straight_through(z: jax.Array, codes: jax.Array) -> jax.Array:
  """z + sg(codes - z): forward value `codes`, gradient identity to z (VQ-VAE, 1711.00937)."""
  return z + jax.lax.stop_gradient(codes - z)


def rotation_trick(z: jax.Array, codes: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Rotation-trick estimator (arXiv 2410.06424) over the last axis.

  Forward value equals `codes`; the gradient to `z` goes through the rotation + rescaling that
  maps z onto its code: out = [z - 2(z.w)w + 2(z.sg u) sg q] * sg(||c|| / ||z||) with
  u = z/||z||, q = c/||c||, w = sg(l2n(u + q)).

  Args:
    z: `[..., d]` float32 encoder vectors (gradients flow to them).
    codes: `[..., d]` float32 selected codes (treated as constants).
    eps: the norm floor used in every normalisation.

  Returns:
    `[..., d]` float32.
  """
  codes = jax.lax.stop_gradient(codes)
  z_norm = jnp.sqrt(jnp.sum(jnp.square(z), axis=-1, keepdims=True))
  c_norm = jnp.sqrt(jnp.sum(jnp.square(codes), axis=-1, keepdims=True))
  u = jax.lax.stop_gradient(z / jnp.maximum(z_norm, eps))
  q = codes / jnp.maximum(c_norm, eps)
  w = jax.lax.stop_gradient(l2_normalize(u + q, eps))
  rotated = (z - 2.0 * jnp.sum(z * w, axis=-1, keepdims=True) * w
             + 2.0 * jnp.sum(z * u, axis=-1, keepdims=True) * q)
  scale = jax.lax.stop_gradient(c_norm / jnp.maximum(z_norm, eps))
  return rotated * scale


def vq_losses(z: jax.Array, codes: jax.Array, beta: float) -> tuple[jax.Array, jax.Array]:
  """(commitment, codebook) losses of VQ-VAE (arXiv 1711.00937), means over all elements.

  commitment = beta * mean((sg(codes) - z)^2)  -> gradient to z only;
  codebook   = mean((codes - sg(z))^2)         -> gradient to the codebook only.
  """
  z = z.astype(jnp.float32)
  codes = codes.astype(jnp.float32)
  commitment = beta * jnp.mean(jnp.square(jax.lax.stop_gradient(codes) - z))
  codebook = jnp.mean(jnp.square(codes - jax.lax.stop_gradient(z)))
  return commitment, codebook


# ----------------------------------------------------------------------------------------
# Nearest-code assignment, chunked.
# ----------------------------------------------------------------------------------------


class Assignment(NamedTuple):
  """Result of `assign_codes` for one codebook.

  Attributes:
    ids: `[N]` int32 index of the nearest code (first minimum on ties).
    codes: `[N, d]` float32 the selected code vectors (one-hot lookup, gradient reaches the
      codebook).
    counts: `[K]` float32 number of tokens assigned to each code (no gradient).
    sums: `[K, d]` float32 sum of the tokens assigned to each code (no gradient), or None.
    entropy_sum: () float32 sum over tokens of the per-token softmax entropy, or None.
    prob_sum: `[K]` float32 sum over tokens of the softmax probabilities, or None.
  """
  ids: jax.Array
  codes: jax.Array
  counts: jax.Array
  sums: jax.Array | None
  entropy_sum: jax.Array | None
  prob_sum: jax.Array | None


def num_chunks(num_tokens: int, num_codes: int, chunk_tokens: int | None,
               max_elements: int = DEFAULT_MAX_DISTANCE_ELEMENTS) -> int:
  """How many chunks `assign_codes` splits `num_tokens` into (a divisor of num_tokens).

  Args:
    num_tokens: N.
    num_codes: K.
    chunk_tokens: None = automatic (keep N/m * K <= max_elements); 0 = never chunk; a positive
      int = at most that many tokens per chunk.
    max_elements: the automatic budget of distance entries per chunk.
  """
  if num_tokens == 0:
    return 1
  if chunk_tokens is None:
    per_chunk = max(1, max_elements // max(num_codes, 1))
  elif chunk_tokens == 0:
    return 1
  else:
    per_chunk = int(chunk_tokens)
  need = math.ceil(num_tokens / per_chunk)
  # A divisor keeps the reshape free of padding, which would force a resharding of the token
  # axis; prefer the smallest divisor >= need.
  for m in range(max(need, 1), num_tokens + 1):
    if num_tokens % m == 0:
      return m
  return num_tokens


LOOKUPS = ("auto", "onehot", "gather")


def resolve_lookup(lookup: str) -> str:
  """"auto" -> "onehot" when compiling for TPU (MXU matmuls, docs/design.md §4), "gather"
  elsewhere (the platform compiled for, `jaxtok.parallel.target_platform`).

  Both give identical ids, codes and counts; on CPU the `[N, K]` one-hot costs as much as the
  distance matrix itself (see benchmarks/quantizers.py), while a gather / scatter-add is O(N).
  """
  if lookup not in LOOKUPS:
    raise ValueError(f"lookup must be one of {LOOKUPS}, got {lookup!r}")
  if lookup == "auto":
    return "onehot" if target_platform() == "tpu" else "gather"
  return lookup


def _assign_chunk(z, codebook, weights, *, entropy_temperature, with_sums, precision, lookup):
  """assign_codes for one chunk: z `[n, d]`, codebook `[K, d]`, weights `[n]` or None -> partial
  results."""
  num_codes = codebook.shape[0]
  dist = pairwise_sq_distances(z, codebook, precision=precision)
  ids = jnp.argmin(dist, axis=-1).astype(jnp.int32)
  sums = None
  if lookup == "onehot":
    one_hot = jax.nn.one_hot(ids, num_codes, dtype=jnp.float32)
    codes = jnp.dot(one_hot, codebook, precision=precision)
    counted = one_hot if weights is None else one_hot * weights[:, None]
    counts = jnp.sum(counted, axis=0)
    if with_sums:
      sums = jnp.dot(counted.T, jax.lax.stop_gradient(z), precision=precision)
  else:
    codes = jnp.take(codebook, ids, axis=0)
    w = 1.0 if weights is None else weights
    counts = jnp.zeros((num_codes,), jnp.float32).at[ids].add(w)
    if with_sums:
      zw = jax.lax.stop_gradient(z) if weights is None else (
          jax.lax.stop_gradient(z) * weights[:, None])
      sums = jnp.zeros(codebook.shape, jnp.float32).at[ids].add(zw)
  entropy_sum = prob_sum = None
  if entropy_temperature is not None:
    # Affinity a = -d / T; softmax over codes (FQGAN / LlamaGen entropy loss, 2411.16681).
    logits = -dist / entropy_temperature
    log_p = jax.nn.log_softmax(logits, axis=-1)
    p = jnp.exp(log_p)
    entropy_sum = -jnp.sum(p * log_p)
    prob_sum = jnp.sum(p, axis=0)
  return ids, codes, jax.lax.stop_gradient(counts), sums, entropy_sum, prob_sum


def assign_codes(z: jax.Array, codebook: jax.Array, *, chunk_tokens: int | None = None,
                 entropy_temperature: float | None = None, with_sums: bool = False,
                 precision=HIGHEST, lookup: str = "auto",
                 max_elements: int = DEFAULT_MAX_DISTANCE_ELEMENTS,
                 weights: jax.Array | None = None) -> Assignment:
  """Nearest code for every token, with one-hot lookup, counts and optional extras.

  The token axis is split into m equal chunks (m from `num_chunks`) processed by `lax.scan`
  (under `jax.checkpoint` when the entropy term needs the softmax in the backward pass), so
  forward and backward hold one `[N/m, K]` distance block at a time.
  Chunks are strided (token i*m + j goes to chunk j) so that a token axis sharded across
  devices stays sharded inside every chunk. Per-token results do not depend on m.

  Args:
    z: `[N, d]` float32 tokens (already normalised for cosine distance).
    codebook: `[K, d]` float32 codes (already normalised for cosine distance).
    chunk_tokens: see `num_chunks`.
    entropy_temperature: if set, also return the softmax(-d / T) entropy sums.
    with_sums: also return the per-code sums of assigned tokens (for the EMA update).
    precision: matmul precision.
    lookup: "onehot" (one-hot matmul lookup and one-hot sums), "gather" (take and
      scatter-add) or "auto" (see `resolve_lookup`); results are identical.
    max_elements: automatic chunk budget.
    weights: optional `[N]` float token weights of `counts` and `sums` (e.g. 0 for tokens a
      residual quantizer dropped); ids, codes and the entropy sums are unweighted.

  Returns:
    An `Assignment`.
  """
  n, d = z.shape
  num_codes = codebook.shape[0]
  m = num_chunks(n, num_codes, chunk_tokens, max_elements)
  lookup = resolve_lookup(lookup)
  if weights is not None:
    weights = jax.lax.stop_gradient(jnp.asarray(weights, jnp.float32).reshape(n))
  chunk_fn = lambda zc, wc: _assign_chunk(
      zc, codebook, wc, entropy_temperature=entropy_temperature, with_sums=with_sums,
      precision=precision, lookup=lookup)
  if m == 1:
    ids, codes, counts, sums, ent, psum = chunk_fn(z, weights)
    return Assignment(ids, codes, counts, sums, ent, psum)

  c = n // m
  zs = z.reshape(c, m, d).swapaxes(0, 1)  # [m, c, d]; chunk j holds tokens i*m + j.
  ws = None if weights is None else weights.reshape(c, m).swapaxes(0, 1)
  zero = lambda shape: jnp.zeros(shape, jnp.float32)
  has_ent = entropy_temperature is not None
  init = (zero((num_codes,)),
          zero((num_codes, d)) if with_sums else None,
          zero(()) if has_ent else None,
          zero((num_codes,)) if has_ent else None)

  def body(carry, chunk):
    zc, wc = chunk
    counts, sums, ent, psum = carry
    ids, codes, c_counts, c_sums, c_ent, c_psum = chunk_fn(zc, wc)
    carry = (counts + c_counts,
             sums + c_sums if with_sums else None,
             ent + c_ent if has_ent else None,
             psum + c_psum if has_ent else None)
    return carry, (ids, codes)

  if has_ent:
    # The entropy gradient needs the chunk's softmax; recompute it in the backward pass
    # instead of saving N x K probabilities. Without entropy the backward needs only the ids
    # and codes, so nothing [n, K]-sized is saved and no recomputation is needed.
    body = jax.checkpoint(body)
  (counts, sums, ent, psum), (ids, codes) = jax.lax.scan(body, init, (zs, ws))
  ids = ids.swapaxes(0, 1).reshape(n)
  codes = codes.swapaxes(0, 1).reshape(n, d)
  return Assignment(ids, codes, counts, sums, ent, psum)


# ----------------------------------------------------------------------------------------
# Regularisers.
# ----------------------------------------------------------------------------------------


def entropy_loss(entropy_sum: jax.Array, prob_sum: jax.Array, num_tokens: int) -> jax.Array:
  """Per-sample entropy minus entropy of the batch-mean distribution (FQGAN, 2411.16681).

  H_sample = mean_n H(p_n); H_avg = -sum_k pbar_k log(pbar_k + 1e-5) with pbar = mean_n p_n.
  The 1e-5 inside the log is the official LlamaGen/FQGAN constant.
  """
  h_sample = entropy_sum / num_tokens
  p_bar = prob_sum / num_tokens
  h_avg = -jnp.sum(p_bar * jnp.log(p_bar + 1e-5))
  return h_sample - h_avg


def disentanglement_loss(codes: list[jax.Array], eps: float = 1e-12) -> jax.Array:
  """Mean over tokens of the squared cosine similarity between sub-codes (FQGAN, 2411.16681).

  Args:
    codes: k >= 2 arrays `[N, d]` (the straight-through outputs of each sub-quantizer).
    eps: normalisation floor.

  Returns:
    () float32, averaged over the k(k-1)/2 pairs (pair order as the official triple model:
    (0,1), (0,2), (1,2), ...).
  """
  if len(codes) < 2:
    return jnp.zeros((), jnp.float32)
  normed = [l2_normalize(c.astype(jnp.float32), eps) for c in codes]
  terms = []
  for i in range(len(normed)):
    for j in range(i + 1, len(normed)):
      terms.append(jnp.mean(jnp.square(jnp.sum(normed[i] * normed[j], axis=-1))))
  return sum(terms) / len(terms)


# ----------------------------------------------------------------------------------------
# Statistics.
# ----------------------------------------------------------------------------------------


def code_stats(counts: jax.Array) -> dict[str, jax.Array]:
  """Usage statistics from per-code assignment counts.

  Args:
    counts: `[K]` or `[H, K]` float counts (H heads / sub-codebooks are averaged).

  Returns:
    dict of () float32: `usage` (fraction of codes used at least once), `perplexity`
    (2**entropy_bits), `entropy_bits` (entropy of the empirical code distribution, bits),
    `dead_codes` (number of codes never used; summed over heads).
  """
  counts = jax.lax.stop_gradient(counts.astype(jnp.float32))
  counts2 = counts.reshape(-1, counts.shape[-1])
  total = jnp.sum(counts2, axis=-1, keepdims=True)
  p = counts2 / jnp.maximum(total, 1.0)
  safe_log = jnp.log2(jnp.where(p > 0, p, 1.0))
  entropy_bits = -jnp.sum(p * safe_log, axis=-1)
  used = counts2 > 0
  return {
      "usage": jnp.mean(used.astype(jnp.float32)),
      "perplexity": jnp.mean(jnp.exp2(entropy_bits)),
      "entropy_bits": jnp.mean(entropy_bits),
      "dead_codes": jnp.sum(~used).astype(jnp.float32),
  }


def id_stats(ids: jax.Array, num_codes: int) -> dict[str, jax.Array]:
  """`code_stats` of the codes in `ids`, without a `[num_codes]` histogram.

  The same four statistics from sorted ids (O(n log n) in the n ids, memory O(n)), so an
  implicit codebook of millions of codes (FSQ) costs nothing per step. Exact: the entropy is
  -(1/n) sum_i log2(c_i / n) over the ids, c_i the count of id i's code.

  Args:
    ids: int ids, any shape, in [0, num_codes).
    num_codes: codebook size.
  """
  flat = jnp.sort(jax.lax.stop_gradient(ids).reshape(-1))
  n = flat.shape[0]
  if n == 0:
    zero = jnp.zeros((), jnp.float32)
    return {"usage": zero, "perplexity": jnp.ones((), jnp.float32), "entropy_bits": zero,
            "dead_codes": jnp.asarray(num_codes, jnp.float32)}
  distinct = 1 + jnp.sum(flat[1:] != flat[:-1])
  counts = (jnp.searchsorted(flat, flat, side="right")
            - jnp.searchsorted(flat, flat, side="left")).astype(jnp.float32)
  entropy_bits = -jnp.mean(jnp.log2(counts / n))
  return {
      "usage": distinct.astype(jnp.float32) / num_codes,
      "perplexity": jnp.exp2(entropy_bits),
      "entropy_bits": entropy_bits,
      "dead_codes": (num_codes - distinct).astype(jnp.float32),
  }


# ----------------------------------------------------------------------------------------
# EMA codebook update and dead-code restart.
# ----------------------------------------------------------------------------------------


def ema_update(cluster_size, embed_avg, counts, sums, *, decay: float, eps: float,
               normalize_eps: float | None = None):
  """One EMA codebook step (VQ-VAE-2 style, arXiv 1906.00446; lucidrains semantics).

  cluster_size <- lerp(cluster_size, counts, 1 - decay); embed_avg <- lerp(embed_avg, sums,
  1 - decay); Laplace smoothing smoothed_k = (n_k + eps) / (S + K eps) * S; codebook =
  embed_avg / smoothed (then l2-normalised when `normalize_eps` is given, for cosine VQ).

  Args:
    cluster_size: `[K]` float32.
    embed_avg: `[K, d]` float32.
    counts: `[K]` float32 batch counts.
    sums: `[K, d]` float32 batch sums of assigned vectors.
    decay: EMA decay.
    eps: Laplace smoothing epsilon.
    normalize_eps: None, or the l2 floor for re-normalising the codebook.

  Returns:
    (cluster_size, embed_avg, codebook) new values.
  """
  w = 1.0 - decay
  cluster_size = cluster_size + w * (counts - cluster_size)
  embed_avg = embed_avg + w * (sums - embed_avg)
  total = jnp.sum(cluster_size, axis=-1, keepdims=True)
  num_codes = cluster_size.shape[-1]
  smoothed = (cluster_size + eps) / (total + num_codes * eps) * total
  codebook = embed_avg / smoothed[..., None]
  if normalize_eps is not None:
    codebook = l2_normalize(codebook, normalize_eps)
  return cluster_size, embed_avg, codebook


def restart_rows(dead: jax.Array, candidates: jax.Array, key: jax.Array) -> jax.Array:
  """Replacement vectors for dead codes, drawn from the current batch.

  Dead codes get distinct batch vectors (a random permutation of the tokens, taken in order of
  the dead codes) when there are at least as many tokens as dead codes, cycling otherwise.
  Deterministic given `key`, and independent of how the batch is sharded.

  Args:
    dead: `[K]` bool.
    candidates: `[N, d]` float32 batch vectors.
    key: PRNG key.

  Returns:
    `[K, d]` float32: a batch vector for every dead row (rows of live codes are arbitrary).
  """
  n = candidates.shape[0]
  perm = jax.random.permutation(key, n)
  rank = jnp.cumsum(dead.astype(jnp.int32)) - 1
  picks = perm[jnp.mod(jnp.maximum(rank, 0), n)]
  return jnp.take(jax.lax.stop_gradient(candidates), picks, axis=0)
