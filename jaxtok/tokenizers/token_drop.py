"""THE tail / nested token-drop sampler: how many leading tokens a training step keeps.

One sampler for both ordered tokenizers:

- One-D-Piece (arXiv 2501.10064) trains with tail-token-drop: each step keeps the first n of
  the K tokens, n uniform in 1..K, so any prefix decodes.
- FlexTok (arXiv 2502.13967) trains with nested dropout: each image keeps its first k
  registers, k drawn "uniform" (1..K), "pow2" (uniform over 1, 2, 4, ..., K) or
  "uniform_pow2" (uniform in 1..K, rounded up to the next power of two, capped at K); the
  registers from k on are replaced by a learned mask token.

Shapes stay static: models hide or replace the dropped tokens with masks built from the
returned lengths.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# "per_step": one length shared by the batch (as the official One-D-Piece code);
# "per_example": one length per image (as FlexTok's nested dropout).
MODES = ("per_step", "per_example")
DISTRIBUTIONS = ("uniform", "pow2", "uniform_pow2")


def _is_pow2(n: int) -> bool:
  return n >= 1 and n & (n - 1) == 0


def _draw(key: jax.Array, shape: tuple[int, ...], num_tokens: int,
          distribution: str) -> jax.Array:
  if distribution == "uniform":
    return jax.random.randint(key, shape, 1, num_tokens + 1, jnp.int32)
  if distribution == "pow2":
    if not _is_pow2(num_tokens):
      raise ValueError(f"num_tokens: expected a power of two for distribution 'pow2', got "
                       f"{num_tokens}")
    e = jax.random.randint(key, shape, 0, num_tokens.bit_length(), jnp.int32)
    return jnp.left_shift(jnp.int32(1), e)
  if distribution == "uniform_pow2":
    n = jax.random.randint(key, shape, 1, num_tokens + 1, jnp.int32)
    # Next power of two >= n: 2^ceil(log2 n), in integers (exact for n < 2^31).
    e = 32 - jax.lax.clz(n - 1)
    return jnp.minimum(jnp.left_shift(jnp.int32(1), e), num_tokens).astype(jnp.int32)
  raise ValueError(f"distribution: expected one of {DISTRIBUTIONS}, got {distribution!r}")


def keep_lengths(key: jax.Array, batch: int, num_tokens: int, mode: str = "per_step",
                 distribution: str = "uniform") -> jax.Array:
  """Kept token counts `[batch]` int32 in 1..num_tokens.

  Args:
    key: a PRNG key.
    batch: B.
    num_tokens: K.
    mode: one of `MODES`.
    distribution: one of `DISTRIBUTIONS` ("pow2" needs K a power of two).
  """
  if mode not in MODES:
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
  if num_tokens < 1:
    raise ValueError(f"num_tokens: expected >= 1, got {num_tokens}")
  if mode == "per_step":
    return jnp.full((batch,), _draw(key, (), num_tokens, distribution), jnp.int32)
  return _draw(key, (batch,), num_tokens, distribution)
