"""REPA's projector (Representation Alignment, arXiv 2410.06940): the trainable MLP that maps a
generator's hidden patch states to a frozen teacher's feature width.

REPA aligns `h_phi(h_l)` (the projector on the hidden states after block l) to the teacher's
patch features with the negative cosine similarity, averaged over patches
(`jaxtok.trainers.losses.repa_loss`); the projector is Linear-SiLU-Linear-SiLU-Linear, 2048
wide in the paper. Models own the projector (its parameters train with them and are saved
with them); the trainer owns the teacher and the loss.
"""
from __future__ import annotations

import jax
from flax import nnx


class REPAProjector(nnx.Module):
  """`[..., din] -> [..., dout]`: Linear(din, width) - SiLU - Linear(width, width) - SiLU -
  Linear(width, dout), with biases (REPA's `build_mlp`)."""

  def __init__(self, din: int, width: int, dout: int, *, rngs: nnx.Rngs):
    for name, value in (("din", din), ("width", width), ("dout", dout)):
      if value < 1:
        raise ValueError(f"{name}: expected >= 1, got {value}")
    self.fc1 = nnx.Linear(din, width, rngs=rngs)
    self.fc2 = nnx.Linear(width, width, rngs=rngs)
    self.fc3 = nnx.Linear(width, dout, rngs=rngs)

  def __call__(self, h: jax.Array) -> jax.Array:
    return self.fc3(jax.nn.silu(self.fc2(jax.nn.silu(self.fc1(h)))))


__all__ = ["REPAProjector"]
