"""Region priors that tie tokens to places: which patches each of K tokens covers.

Used by TiTok / One-D-Piece (`spatial_latents`: each token pools its region of the patch grid,
the decoder spreads it back) and by FlexTok (`spatial_registers`: the coarse-to-fine quadtree
over its registers). `spatial_regions(k, grid, order)` is the one definition of the maps.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


def latent_grid(k: int, grid: int) -> tuple[int, int] | None:
  """(gh, gw): the most square tiling of a `grid` x `grid` patch grid by k regions
  (gh * gw = k, gh <= gw, both dividing `grid`), or None when there is none."""
  best = None
  for gh in range(1, grid + 1):
    if k % gh == 0 and grid % gh == 0 and grid % (k // gh) == 0 and gh <= k // gh:
      best = (gh, k // gh)
  return best


# How `spatial_latents` ties tokens to places (see `spatial_regions`).
SPATIAL_ORDERS = ("raster", "coarse_to_fine")


def _coarse_to_fine_side(k: int, grid: int) -> int | None:
  """n with k = n * n, n a power of two dividing `grid`, or None."""
  n = int(round(k ** 0.5))
  ok = n * n == k and n & (n - 1) == 0 and grid % n == 0
  return n if ok else None


@functools.cache
def _regions(k: int, grid: int, order: str) -> np.ndarray | None:
  if order == "raster":
    tiling = latent_grid(k, grid)
    if tiling is None:
      return None
    gh, gw = tiling
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    region = (rows // (grid // gh)) * gw + cols // (grid // gw)  # [P] -> token
    return (region[None, :] == np.arange(k)[:, None]).astype(np.float32)
  n = _coarse_to_fine_side(k, grid)
  if n is None:
    return None
  # Cell (r, c) of the n x n latent grid is at level l = the first at whose stride n / 2**l
  # both r and c are aligned; its token covers the (n / 2**l)-sided block from (r, c).
  cells = []
  for r in range(n):
    for c in range(n):
      level, stride = 0, n
      while r % stride or c % stride:
        level, stride = level + 1, stride // 2
      cells.append((level, r, c, stride))
  cells.sort()
  cell = grid // n  # patches per latent cell side
  rows, cols = np.divmod(np.arange(grid * grid), grid)
  rows, cols = rows // cell, cols // cell
  out = np.zeros((k, grid * grid), np.float32)
  for i, (_, r, c, stride) in enumerate(cells):
    out[i] = (rows >= r) & (rows < r + stride) & (cols >= c) & (cols < c + stride)
  return out


def spatial_regions(k: int, grid: int, order: str = "raster") -> np.ndarray | None:
  """`[k, grid * grid]` 0/1 map of the patches each of k tokens covers, or None when k does
  not fit `grid` in `order`.

  - "raster": the tokens tile the grid as `latent_grid(k, grid)`, in raster order; every
    patch is covered by exactly one token.
  - "coarse_to_fine": k = n * n (n a power of two dividing `grid`) tokens form a quadtree over
    the n x n latent grid: token 0 covers the whole image, the next 3 the other quadrants
    (blocks of side n / 2), the next 12 the blocks of side n / 4, ..., the last 3/4 of them
    single cells; within a level, raster order. A patch is covered by at most one token per
    level (none where its block's first cell holds the coarser token, as in a Haar basis), so
    every prefix of whole levels describes the image at one resolution (1, 2 x 2, 4 x 4, ...).
  """
  if order not in SPATIAL_ORDERS:
    raise ValueError(f"order: expected one of {SPATIAL_ORDERS}, got {order!r}")
  regions = _regions(k, grid, order)
  return None if regions is None else regions.copy()


def pool_to_latents(x: jax.Array, k: int, grid: int, order: str = "raster") -> jax.Array:
  """`[B, grid*grid, W]` patch features -> `[B, k, W]`: each token's mean over its region
  (`spatial_regions(k, grid, order)`)."""
  regions = spatial_regions(k, grid, order)
  weights = jnp.asarray(regions / regions.sum(axis=1, keepdims=True), x.dtype)
  return jnp.einsum("kp,bpw->bkw", weights, x, precision=jax.lax.Precision.HIGHEST)


def spread_to_patches(x: jax.Array, grid: int, order: str = "raster") -> jax.Array:
  """`[B, k, W]` per-token features -> `[B, grid*grid, W]`: each patch the sum of the tokens
  whose regions cover it (raster: its one region's token)."""
  regions = jnp.asarray(spatial_regions(x.shape[1], grid, order), x.dtype)
  return jnp.einsum("kp,bkw->bpw", regions, x, precision=jax.lax.Precision.HIGHEST)


__all__ = ["SPATIAL_ORDERS", "latent_grid", "pool_to_latents", "spatial_regions",
           "spread_to_patches"]
