"""The FID Inception network (TF-2015-12-05 Inception v3 graph) in Flax NNX, NHWC.

The network behind every published FID number (Heusel et al., arXiv 1706.08500), in the form
pytorch-fid ports it (its FIDInceptionA/C/E blocks): convs without bias, BatchNorm with
eps = 1e-3 and no scale, ReLU; `count_include_pad=False` 3x3 average pools in the pool branches
of the A, C and first E blocks; a 3x3 max pool in the last E block (Mixed_7c); features are the
2048-d global average of the final 8x8 map (the TF graph's `pool3`).

Input handling follows pytorch-fid: images in [0, 1] -> bilinear resize to 299x299
(align_corners=False, no antialias; done as two interpolation matrices so down-sampling matches
torch too) -> `2x - 1`.

Usage:

  extract = InceptionFeatures()          # finds and converts the weights (inception_weights.py)
  feats = extract(images)                # uint8 [N, H, W, 3] -> float32 [N, 2048] numpy
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.nets import inception_weights

FEATURE_DIM = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3  # TF's BatchNorm epsilon in the 2015 graph.
# The Inception blocks after the stem, in order (35x35: mixed..mixed_2, 17x17: mixed_3..mixed_7,
# 8x8: mixed_8..mixed_10 at 299 input).
BLOCKS = ("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7",
          "mixed_8", "mixed_9", "mixed_10")

_PRECISIONS = {"highest": jax.lax.Precision.HIGHEST, "high": jax.lax.Precision.HIGH,
               "default": jax.lax.Precision.DEFAULT}


# ---------------------------------------------------------------------------------------------
# Input pipeline.
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def bilinear_matrix(in_size: int, out_size: int = INPUT_SIZE) -> np.ndarray:
  """`[out_size, in_size]` float32 rows of torch's bilinear resize (align_corners=False).

  Row i holds the weights of `F.interpolate(..., mode='bilinear', align_corners=False,
  antialias=False)` along one axis: `src = max((i + 0.5) * in/out - 0.5, 0)`,
  `i0 = floor(src)`, `i1 = min(i0 + 1, in - 1)`, weights `1 - (src - i0)` and `src - i0`.
  Without antialias a down-sample also reads only two taps, unlike `jax.image.resize`.
  """
  if in_size < 1 or out_size < 1:
    raise ValueError(f"in_size/out_size: expected positive sizes, got {in_size}, {out_size}")
  # float32 coordinate arithmetic, as torch's CPU kernel does it (float64 here would move the
  # taps' weights by up to 4e-5 when down-sampling, e.g. 777 -> 299).
  f32 = np.float32
  scale = f32(in_size) / f32(out_size)
  src = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
  i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = (src - i0.astype(f32)).astype(f32)
  mat = np.zeros((out_size, in_size), np.float32)
  rows = np.arange(out_size)
  np.add.at(mat, (rows, i0), 1.0 - w1)
  np.add.at(mat, (rows, i1), w1)
  return mat


def to_unit_float(images) -> jax.Array:
  """uint8 `[..., 3]` -> float32 /255; float inputs pass through (assumed in [0, 1])."""
  images = jnp.asarray(images)
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def preprocess(images, *, size: int = INPUT_SIZE,
               precision: jax.lax.Precision = jax.lax.Precision.HIGHEST) -> jax.Array:
  """Images `[B, H, W, 3]` (uint8, or float in [0, 1]) -> float32 `[B, 299, 299, 3]` in [-1, 1].

  pytorch-fid's convention: bilinear resize of the [0, 1] values (identity at 299), then 2x-1.
  """
  x = to_unit_float(images)
  _, h, w, _ = x.shape
  if h != size:
    x = jnp.einsum("oh,bhwc->bowc", jnp.asarray(bilinear_matrix(h, size)), x,
                   precision=precision)
  if w != size:
    x = jnp.einsum("ow,bhwc->bhoc", jnp.asarray(bilinear_matrix(w, size)), x,
                   precision=precision)
  return 2.0 * x - 1.0


# ---------------------------------------------------------------------------------------------
# Layers.
# ---------------------------------------------------------------------------------------------


class ConvBN(nnx.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, no gamma, inference stats) -> ReLU.

  Attributes mirror the TorchScript names: `weight` `[kh, kw, in, out]` (HWIO), `beta`,
  `mean`, `var` `[out]`.
  """

  def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 1, *,
               stride: int = 1, padding: int | tuple[int, int] = 0,
               precision: jax.lax.Precision = jax.lax.Precision.HIGHEST,
               rngs: nnx.Rngs | None = None):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    self.stride = stride
    self.padding = (padding, padding) if isinstance(padding, int) else tuple(padding)
    self.precision = precision
    # He-normal init drawn on the host: 94 differently shaped jax.random calls would each
    # compile (minutes on a busy CPU) for weights that load_weights replaces anyway.
    # rngs=None: zero placeholders, for a model whose weights are about to be loaded.
    if rngs is None:
      weight = np.zeros((kh, kw, cin, cout), np.float32)
    else:
      seed = int(jax.random.randint(rngs.params(), (), 0, np.iinfo(np.int32).max))
      weight = np.random.default_rng(seed).standard_normal((kh, kw, cin, cout), np.float32)
    self.weight = nnx.Param(jnp.asarray(weight / np.sqrt(kh * kw * cin)))
    self.beta = nnx.Param(jnp.asarray(np.zeros((cout,), np.float32)))
    self.mean = nnx.BatchStat(jnp.asarray(np.zeros((cout,), np.float32)))
    self.var = nnx.BatchStat(jnp.asarray(np.ones((cout,), np.float32)))

  def __call__(self, x: jax.Array) -> jax.Array:
    # BN folded into the conv: one multiply on the small kernel instead of on the big map.
    inv = jax.lax.rsqrt(self.var[...] + BN_EPS)
    ph, pw = self.padding
    y = jax.lax.conv_general_dilated(
        x, self.weight[...] * inv, (self.stride, self.stride), ((ph, ph), (pw, pw)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=self.precision)
    return jax.nn.relu(y + (self.beta[...] - self.mean[...] * inv))


def _max_pool(x: jax.Array, stride: int, pad: int) -> jax.Array:
  pads = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1),
                               pads)


def _avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
  """3x3 stride-1 pad-1 average pool that does not count the padded zeros."""
  pads = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pads)
  _, h, w, _ = x.shape

  def counts(n):
    i = np.arange(n)
    return (np.minimum(i + 1, n - 1) - np.maximum(i - 1, 0) + 1).astype(np.float32)

  return total / jnp.asarray(np.outer(counts(h), counts(w)))[None, :, :, None]


class _Tower(nnx.Module):
  """A chain of ConvBN layers named `conv`, `conv_1`, ... (TF names); optional leading pool."""

  def __init__(self, specs: Sequence[tuple], *, pool: bool = False, precision, rngs):
    self.pool = pool
    self.names = tuple("conv" if i == 0 else f"conv_{i}" for i in range(len(specs)))
    for name, (cin, cout, k, s, p) in zip(self.names, specs):
      setattr(self, name, ConvBN(cin, cout, k, stride=s, padding=p, precision=precision,
                                 rngs=rngs))

  def __call__(self, x):
    if self.pool:
      x = _avg_pool_exclude_pad(x)
    for name in self.names:
      x = getattr(self, name)(x)
    return x


class InceptionA(nnx.Module):
  """Mixed_5b..5d: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (FIDInceptionA)."""

  def __init__(self, cin: int, pool_features: int, *, precision, rngs):
    kw = dict(precision=precision, rngs=rngs)
    self.conv = ConvBN(cin, 64, 1, **kw)
    self.tower = _Tower([(cin, 48, 1, 1, 0), (48, 64, 5, 1, 2)], **kw)
    self.tower_1 = _Tower([(cin, 64, 1, 1, 0), (64, 96, 3, 1, 1), (96, 96, 3, 1, 1)], **kw)
    self.tower_2 = _Tower([(cin, pool_features, 1, 1, 0)], pool=True, **kw)

  def __call__(self, x):
    return jnp.concatenate([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], -1)


class InceptionB(nnx.Module):
  """Mixed_6a (grid reduction 35 -> 17): 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2."""

  def __init__(self, cin: int, *, precision, rngs):
    kw = dict(precision=precision, rngs=rngs)
    self.conv = ConvBN(cin, 384, 3, stride=2, **kw)
    self.tower = _Tower([(cin, 64, 1, 1, 0), (64, 96, 3, 1, 1), (96, 96, 3, 2, 0)], **kw)

  def __call__(self, x):
    return jnp.concatenate([self.conv(x), self.tower(x), _max_pool(x, 2, 0)], -1)


class InceptionC(nnx.Module):
  """Mixed_6b..6e: factorized 7x7 branches (FIDInceptionC)."""

  def __init__(self, cin: int, c7: int, *, precision, rngs):
    kw = dict(precision=precision, rngs=rngs)
    h, v = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # (kernel, padding) for 1x7 and 7x1.
    self.conv = ConvBN(cin, 192, 1, **kw)
    self.tower = _Tower([(cin, c7, 1, 1, 0), (c7, c7, h[0], 1, h[1]),
                         (c7, 192, v[0], 1, v[1])], **kw)
    self.tower_1 = _Tower([(cin, c7, 1, 1, 0), (c7, c7, v[0], 1, v[1]), (c7, c7, h[0], 1, h[1]),
                           (c7, c7, v[0], 1, v[1]), (c7, 192, h[0], 1, h[1])], **kw)
    self.tower_2 = _Tower([(cin, 192, 1, 1, 0)], pool=True, **kw)

  def __call__(self, x):
    return jnp.concatenate([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], -1)


class InceptionD(nnx.Module):
  """Mixed_7a (grid reduction 17 -> 8): 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2."""

  def __init__(self, cin: int, *, precision, rngs):
    kw = dict(precision=precision, rngs=rngs)
    self.tower = _Tower([(cin, 192, 1, 1, 0), (192, 320, 3, 2, 0)], **kw)
    self.tower_1 = _Tower([(cin, 192, 1, 1, 0), (192, 192, (1, 7), 1, (0, 3)),
                           (192, 192, (7, 1), 1, (3, 0)), (192, 192, 3, 2, 0)], **kw)

  def __call__(self, x):
    return jnp.concatenate([self.tower(x), self.tower_1(x), _max_pool(x, 2, 0)], -1)


class InceptionE(nnx.Module):
  """Mixed_7b/7c: expanded 1x3 + 3x1 branches; `pool` is 'avg' (7b) or 'max' (7c).

  The max pool in Mixed_7c is a quirk of the TF-2015 graph that FID inherits
  (pytorch-fid's FIDInceptionE_2).
  """

  def __init__(self, cin: int, pool: str, *, precision, rngs):
    if pool not in ("avg", "max"):
      raise ValueError(f"pool: expected 'avg' or 'max', got {pool!r}")
    kw = dict(precision=precision, rngs=rngs)
    self.pool = pool
    self.conv = ConvBN(cin, 320, 1, **kw)
    self.tower_conv = ConvBN(cin, 384, 1, **kw)
    self.tower_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1), **kw)
    self.tower_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0), **kw)
    self.tower_1_conv = ConvBN(cin, 448, 1, **kw)
    self.tower_1_conv_1 = ConvBN(448, 384, 3, padding=1, **kw)
    self.tower_1_mixed_conv = ConvBN(384, 384, (1, 3), padding=(0, 1), **kw)
    self.tower_1_mixed_conv_1 = ConvBN(384, 384, (3, 1), padding=(1, 0), **kw)
    self.tower_2_conv = ConvBN(cin, 192, 1, **kw)

  def __call__(self, x):
    a = self.tower_conv(x)
    b = self.tower_1_conv_1(self.tower_1_conv(x))
    pooled = _avg_pool_exclude_pad(x) if self.pool == "avg" else _max_pool(x, 1, 1)
    return jnp.concatenate([
        self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
        self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)],
        -1)


class InceptionV3FID(nnx.Module):
  """FID Inception: `[B, 299, 299, 3]` float in [-1, 1] -> pool3 features `[B, 2048]`.

  Attribute names are the TorchScript (TF-graph) names, so `conv_names()` paths index it.
  Random weights with `rngs`, zeros without; `load_weights` / `InceptionFeatures` put the
  real weights in.
  """

  def __init__(self, *, precision: str | jax.lax.Precision = "highest",
               rngs: nnx.Rngs | None = None):
    if isinstance(precision, str):
      if precision not in _PRECISIONS:
        raise ValueError(f"precision: expected one of {sorted(_PRECISIONS)}, got {precision!r}")
      precision = _PRECISIONS[precision]
    kw = dict(precision=precision, rngs=rngs)
    self.conv = ConvBN(3, 32, 3, stride=2, **kw)
    self.conv_1 = ConvBN(32, 32, 3, **kw)
    self.conv_2 = ConvBN(32, 64, 3, padding=1, **kw)
    self.conv_3 = ConvBN(64, 80, 1, **kw)
    self.conv_4 = ConvBN(80, 192, 3, **kw)
    self.mixed = InceptionA(192, 32, **kw)
    self.mixed_1 = InceptionA(256, 64, **kw)
    self.mixed_2 = InceptionA(288, 64, **kw)
    self.mixed_3 = InceptionB(288, **kw)
    self.mixed_4 = InceptionC(768, 128, **kw)
    self.mixed_5 = InceptionC(768, 160, **kw)
    self.mixed_6 = InceptionC(768, 160, **kw)
    self.mixed_7 = InceptionC(768, 192, **kw)
    self.mixed_8 = InceptionD(768, **kw)
    self.mixed_9 = InceptionE(1280, "avg", **kw)
    self.mixed_10 = InceptionE(2048, "max", **kw)

  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
      raise ValueError(f"x: expected [B, {INPUT_SIZE}, {INPUT_SIZE}, 3], got {x.shape}")
    return self.features(x)[1]

  def features(self, x: jax.Array, taps: Sequence[str] = ()
               ) -> tuple[list[jax.Array], jax.Array]:
    """The maps after the blocks named in `taps` (in `BLOCKS` order) and pool3.

    Args:
      x: `[B, H, W, 3]` float in [-1, 1], H, W >= 75 (299 for FID).
      taps: names from `BLOCKS`.

    Returns:
      (maps, pool3): `[B, h, w, C]` per tap and `[B, 2048]`, the global average of the last
      map (the graph's 8x8 average pool at 299).
    """
    x = self.conv_2(self.conv_1(self.conv(x)))
    x = _max_pool(x, 2, 0)
    x = self.conv_4(self.conv_3(x))
    x = _max_pool(x, 2, 0)
    maps = []
    for name in BLOCKS:
      x = getattr(self, name)(x)
      if name in taps:
        maps.append(x)
    return maps, jnp.mean(x, axis=(1, 2))

  def layer(self, name: str) -> ConvBN:
    """The ConvBN at a TF-graph path such as `mixed_4.tower_1.conv_3`."""
    module = self
    for part in name.split("."):
      module = getattr(module, part)
    return module

  def load_weights(self, params: dict[str, np.ndarray]) -> None:
    """Loads `{name.weight (OIHW), name.beta, name.mean, name.var}` (inception_weights)."""
    for name in inception_weights.conv_names():
      conv = self.layer(name)
      w = np.asarray(params[f"{name}.weight"], np.float32).transpose(2, 3, 1, 0)  # OIHW->HWIO
      for leaf, value in (("weight", w), ("beta", params[f"{name}.beta"]),
                          ("mean", params[f"{name}.mean"]), ("var", params[f"{name}.var"])):
        value = np.asarray(value, np.float32)
        if value.shape != getattr(conv, leaf).shape:
          raise ValueError(f"params[{name}.{leaf}]: expected shape {getattr(conv, leaf).shape}, "
                           f"got {value.shape}")
        # Whole-value replacement: an indexed `[...] =` update would compile per shape.
        getattr(conv, leaf).set_value(jnp.asarray(value))


# ---------------------------------------------------------------------------------------------
# Feature extraction.
# ---------------------------------------------------------------------------------------------


def check_images(images, name: str = "images") -> np.ndarray:
  """`[N, H, W, 3]` uint8, or float in [0, 1] -> numpy; anything else -> ValueError."""
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3:
    raise ValueError(f"{name}: expected [N, H, W, 3] images, got shape {images.shape}")
  if images.dtype != np.uint8:
    if not np.issubdtype(images.dtype, np.floating):
      raise ValueError(f"{name}: expected uint8 or float images, got dtype {images.dtype}")
    if images.size and (np.nanmin(images) < -1e-6 or np.nanmax(images) > 1 + 1e-6
                        or not np.isfinite(images).all()):
      raise ValueError(f"{name}: float images must be in [0, 1], got range "
                       f"[{np.nanmin(images)}, {np.nanmax(images)}]")
  return images


class InceptionFeatures:
  """Callable: images `[N, H, W, 3]` (uint8 or float [0, 1]) -> float32 numpy `[N, 2048]`.

  Runs in fixed-size batches (the last one zero-padded, so one compilation per input
  resolution); the network and the pytorch-fid preprocessing are one jitted function.
  With `shard=True` (default: on when there are several non-CPU local devices) each batch is
  split over the local devices along a 1D "data" mesh.
  """

  def __init__(self, weights: str | os.PathLike | dict | None = None, *, batch_size: int = 64,
               precision: str = "highest", shard: bool | None = None):
    if batch_size < 1:
      raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
    self.batch_size = batch_size
    self.model = InceptionV3FID(precision=precision)
    params = weights if isinstance(weights, dict) else inception_weights.load_params(weights)
    self.model.load_weights(params)
    graphdef, state = nnx.split(self.model)
    self.precision = _PRECISIONS[precision]
    devices = jax.local_devices()
    if shard is None:
      shard = len(devices) > 1 and devices[0].platform != "cpu"
    self._data_sharding = None
    if shard and len(devices) > 1:
      if batch_size % len(devices):
        raise ValueError(f"batch_size: expected a multiple of the {len(devices)} local devices "
                         f"when sharding, got {batch_size}")
      mesh = jax.sharding.Mesh(np.array(devices), ("data",))
      self._data_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
      state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    self._state = state

    def forward(state, images):
      model = nnx.merge(graphdef, state)
      return model(preprocess(images, precision=self.precision))

    self._forward = jax.jit(forward)

  def features_batch(self, images) -> jax.Array:
    """One batch, no padding: `[B, H, W, 3]` -> `[B, 2048]` float32 jax array (async)."""
    images = jnp.asarray(images) if self._data_sharding is None else jax.device_put(
        images, self._data_sharding)
    return self._forward(self._state, images)

  def __call__(self, images) -> np.ndarray:
    images = check_images(images)
    n = images.shape[0]
    out, pending = [], []
    for start in range(0, n, self.batch_size):
      batch = images[start:start + self.batch_size]
      valid = batch.shape[0]
      if valid < self.batch_size:
        pad = np.zeros((self.batch_size - valid,) + batch.shape[1:], batch.dtype)
        batch = np.concatenate([batch, pad])
      pending.append((self.features_batch(batch), valid))
      if len(pending) > 1:  # Keep one batch in flight while the host fetches the previous.
        feats, v = pending.pop(0)
        out.append(np.asarray(feats)[:v])
    for feats, v in pending:
      out.append(np.asarray(feats)[:v])
    if not out:
      return np.zeros((0, FEATURE_DIM), np.float32)
    return np.concatenate(out).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=4)
def default_extractor(weights: str | None = None, batch_size: int = 64,
                      precision: str = "highest") -> InceptionFeatures:
  """A process-wide cached `InceptionFeatures` (building one converts/loads 90 MB)."""
  return InceptionFeatures(weights, batch_size=batch_size, precision=precision)
