"""THE tail / nested token-drop sampler: how many leading tokens a training step keeps.

One-D-Piece (arXiv 2501.10064) trains with tail-token-drop: each step keeps the first n of
the K tokens, n uniform in 1..K, so any prefix decodes. Shapes stay static: models hide the
dropped tokens with an attention mask built from the returned lengths.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# "per_step": one length shared by the batch (as the official One-D-Piece code);
# "per_example": one length per image. Both uniform on 1..K.
MODES = ("per_step", "per_example")


def keep_lengths(key: jax.Array, batch: int, num_tokens: int,
                 mode: str = "per_step") -> jax.Array:
  """Kept token counts `[batch]` int32 in 1..num_tokens.

  Args:
    key: a PRNG key.
    batch: B.
    num_tokens: K.
    mode: one of `MODES`.
  """
  if mode == "per_step":
    n = jax.random.randint(key, (), 1, num_tokens + 1, jnp.int32)
    return jnp.full((batch,), n, jnp.int32)
  if mode == "per_example":
    return jax.random.randint(key, (batch,), 1, num_tokens + 1, jnp.int32)
  raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
