"""Frozen semantic teachers for FQGAN's alignment loss and REPA-style feature losses.

The interface every teacher follows: `teacher(images)` with images `[B, H, W, 3]` float in
[0, 1] (or uint8) -> `TeacherFeatures(cls [B, W], patches [B, N, W])` float32, computed under
`stop_gradient`; `teacher.width` is W.

Available offline: `InceptionTeacher`, the FID Inception network (`jaxtok.nets.inception`)
standing in for the released teachers (CLIP ViT-L/14 for FQGAN-Dual; DINOv2-S/14 and CLIP
ViT-B/16 for Triple): its feature map after block `tap` gives the patch features and their
global mean the CLS feature (pool3 for the last block, 2048 wide; `mixed_2`, 288 wide, is
the CPU variants' choice). The Flax ports of the released CLIP / DINOv2 towers are not in
jaxtok yet: `build_teacher` names them and says so.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.nets import inception, inception_weights

# Channels after each FID Inception block.
INCEPTION_WIDTHS = {"mixed": 256, "mixed_1": 288, "mixed_2": 288, "mixed_3": 768,
                    "mixed_4": 768, "mixed_5": 768, "mixed_6": 768, "mixed_7": 768,
                    "mixed_8": 1280, "mixed_9": 2048, "mixed_10": 2048}
# The released FQGAN teachers (Hugging Face names) and their feature widths.
RELEASED_TEACHERS = {"openai/clip-vit-large-patch14": 1024, "openai/clip-vit-base-patch16": 768,
                     "facebook/dinov2-small": 384}


class TeacherFeatures(NamedTuple):
  """`cls` `[B, W]` and `patches` `[B, N, W]` float32 (gradient stopped)."""
  cls: jax.Array
  patches: jax.Array


class InceptionTeacher(nnx.Module):
  """FID Inception as a frozen teacher: features after block `tap`.

  Args:
    weights: the FID Inception weights (a path or a loaded dict, see
      `jaxtok.nets.inception_weights.load_params`; None finds them as FID does). Pass
      `rngs` instead for random weights (tests).
    tap: an Inception block name (`jaxtok.nets.inception.BLOCKS`).
    size: input side after the bilinear resize (299 as FID; >= 75).
  """

  def __init__(self, weights: str | os.PathLike | dict | None = None, *, tap: str = "mixed_10",
               size: int = inception.INPUT_SIZE, precision: str = "highest",
               rngs: nnx.Rngs | None = None):
    if tap not in INCEPTION_WIDTHS:
      raise ValueError(f"tap: expected one of {list(INCEPTION_WIDTHS)}, got {tap!r}")
    if size < 75:
      raise ValueError(f"size: expected >= 75 (the Inception stem), got {size}")
    self.tap, self.size, self.width = tap, int(size), INCEPTION_WIDTHS[tap]
    self.network = inception.InceptionV3FID(precision=precision, rngs=rngs)
    if rngs is None:
      params = weights if isinstance(weights, dict) else inception_weights.load_params(weights)
      self.network.load_weights(params)

  def __call__(self, images: jax.Array) -> TeacherFeatures:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images: expected [B, H, W, 3] in [0, 1], got shape "
                       f"{tuple(images.shape)}")
    x = inception.preprocess(images, size=self.size)
    maps, pool = self.network.features(x, taps=(self.tap,))
    fmap = maps[0]
    b, h, w, c = fmap.shape
    cls = pool if self.tap == inception.BLOCKS[-1] else jnp.mean(fmap, axis=(1, 2))
    return TeacherFeatures(jax.lax.stop_gradient(cls.astype(jnp.float32)),
                           jax.lax.stop_gradient(fmap.reshape(b, h * w, c).astype(jnp.float32)))


def _inception_spec(name: str) -> tuple[str, int]:
  """'inception[:<block>[:<size>]]' -> (tap, input size)."""
  parts = name.split(":")
  if parts[0] != "inception" or len(parts) > 3:
    raise ValueError(f"name: expected 'inception[:<block>[:<size>]]', got {name!r}")
  tap = parts[1] if len(parts) > 1 and parts[1] else "mixed_10"
  if tap not in INCEPTION_WIDTHS:
    raise ValueError(f"name: unknown Inception block {tap!r} in {name!r}; expected one of "
                     f"{list(INCEPTION_WIDTHS)}")
  size = inception.INPUT_SIZE
  if len(parts) == 3:
    if not parts[2].isdigit() or int(parts[2]) < 75:
      raise ValueError(f"name: expected an input size >= 75 after the block in {name!r}, got "
                       f"{parts[2]!r}")
    size = int(parts[2])
  return tap, size


def build_teacher(name: str, *, weights: str | os.PathLike | dict | None = None,
                  rngs: nnx.Rngs | None = None) -> nnx.Module:
  """A teacher by name: "inception" (pool3, 2048), "inception:<block>" (e.g.
  "inception:mixed_2", 288 wide) or "inception:<block>:<size>" (input resized to size x size
  instead of 299: cheaper for small images)."""
  if name == "inception" or name.startswith("inception:"):
    tap, size = _inception_spec(name)
    return InceptionTeacher(weights, tap=tap, size=size, rngs=rngs)
  if name in RELEASED_TEACHERS:
    raise ValueError(f"name: the Flax port of {name!r} is not part of jaxtok yet; use "
                     f"'inception' or 'inception:<block>' (offline stand-ins)")
  raise ValueError(f"name: expected 'inception', 'inception:<block>[:<size>]' (blocks "
                   f"{list(INCEPTION_WIDTHS)}), got {name!r}")


def teacher_width(name: str) -> int:
  """Feature width W of a teacher name (without building it)."""
  if name == "inception" or name.startswith("inception:"):
    return INCEPTION_WIDTHS[_inception_spec(name)[0]]
  if name in RELEASED_TEACHERS:
    return RELEASED_TEACHERS[name]
  raise ValueError(f"name: unknown teacher {name!r}")


__all__ = ["INCEPTION_WIDTHS", "InceptionTeacher", "RELEASED_TEACHERS", "TeacherFeatures",
           "build_teacher", "teacher_width"]
