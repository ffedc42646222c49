"""Variable types that quantizers keep besides their parameters.

Both are `nnx.Variable` subclasses that are *not* `nnx.Param`, so an optimizer built with
`wrt=nnx.Param` never touches them; they are updated in place by the quantizers in train mode.
"""
from __future__ import annotations

from flax import nnx


class CodebookStats(nnx.Variable):
  """Running code-usage statistics (cumulative assignment counts, number of updates)."""


class EmaState(nnx.Variable):
  """EMA-maintained state: per-code cluster sizes, running sums, and an EMA-learned codebook."""


class FrozenCodebook(nnx.Variable):
  """A fixed random codebook (SimVQ): part of the model, never trained or updated."""
