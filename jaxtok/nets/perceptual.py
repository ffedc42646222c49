"""Perceptual losses: LPIPS (VGG16) with user-provided weights, and an offline Inception one.

LPIPS (Zhang et al., arXiv 1801.03924), the VGG16 variant every tokenizer paper trains with:

  x in [0, 1] -> 2x - 1 -> (x - shift) / scale            (shift/scale below, per channel)
  VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3        (torchvision `vgg16().features`)
  per layer: unit-normalize channels (x / (||x||_2 + 1e-10)), squared difference,
             learned non-negative 1x1 "lin" weights (C -> 1), mean over space
  sum over the five layers                                 -> distance per image

No weights are bundled (no network access here): `LPIPS.from_file(path)` loads
- an `.npz` written by `save_lpips_weights` (keys documented there), or
- PyTorch files (needs torch): the `lpips` package's `weights/v0.1/vgg.pth` (lin layers)
  together with torchvision's `vgg16-397923af.pth` (features), or one full `lpips.LPIPS`
  state dict. `convert_torch_lpips(*state_dicts)` does the same from numpy dicts, so a
  conversion can run once on a machine with torch:
    python -m jaxtok.nets.perceptual vgg.pth vgg16-397923af.pth lpips_vgg.npz

`InceptionPerceptual` needs no extra file beyond the FID Inception weights jaxtok's FID
already uses (`jaxtok.nets.inception`): an LPIPS-style distance (uniform weights) over
intermediate Inception maps plus the pool3 features.
"""
from __future__ import annotations

import os
import sys
import zipfile
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.io import torch_pickle
from jaxtok.nets import inception, inception_weights

# LPIPS input scaling constants (arXiv 1801.03924, the `ScalingLayer` of the lpips package).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10

# torchvision `vgg16().features`: index of each 3x3 conv -> (in, out); "M" = 2x2 max pool.
_VGG16 = ((0, 3, 64), (2, 64, 64), "M", (5, 64, 128), (7, 128, 128), "M",
          (10, 128, 256), (12, 256, 256), (14, 256, 256), "M",
          (17, 256, 512), (19, 512, 512), (21, 512, 512), "M",
          (24, 512, 512), (26, 512, 512), (28, 512, 512))
# The ReLU outputs LPIPS compares: after conv 2, 7, 14, 21, 28 (relu1_2 ... relu5_3).
_TAPS = (2, 7, 14, 21, 28)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
WEIGHTS_FORMAT = "jaxtok-lpips-vgg16-v1"


def _check_pair(x0, x1) -> tuple[jax.Array, jax.Array]:
  if x0.ndim != 4 or x0.shape[-1] != 3:
    raise ValueError(f"x0: expected [B, H, W, 3] images in [0, 1], got shape {x0.shape}")
  if x1.shape != x0.shape:
    raise ValueError(f"x1: expected the shape of x0 {x0.shape}, got {x1.shape}")
  return x0.astype(jnp.float32), x1.astype(jnp.float32)


def _unit_normalize(x: jax.Array) -> jax.Array:
  """Channel unit-normalisation of `[..., C]` as LPIPS does it (eps outside the sqrt)."""
  return x / (jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)) + _NORM_EPS)


class VGG16Features(nnx.Module):
  """VGG16 convolutional trunk, NHWC: returns the five LPIPS ReLU maps.

  Conv attributes are named after torchvision's `features` indices (`conv0`, `conv2`,
  ..., `conv28`), so weight conversion is a rename + OIHW -> HWIO transpose.
  """

  def __init__(self, *, rngs: nnx.Rngs):
    for layer in _VGG16:
      if layer == "M":
        continue
      index, cin, cout = layer
      setattr(self, f"conv{index}", nnx.Conv(cin, cout, (3, 3), padding=((1, 1), (1, 1)),
                                             rngs=rngs))

  def __call__(self, x: jax.Array) -> list[jax.Array]:
    """`[B, H, W, 3]` (already LPIPS-scaled) -> 5 maps `[B, H/2^i, W/2^i, C_i]`."""
    taps = []
    for layer in _VGG16:
      if layer == "M":
        x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        continue
      index = layer[0]
      x = jax.nn.relu(getattr(self, f"conv{index}")(x))
      if index in _TAPS:
        taps.append(x)
    return taps


def lpips_weight_shapes() -> dict[str, tuple[int, ...]]:
  """`{name: shape}` of the LPIPS weight layout (`save_lpips_weights` keys)."""
  shapes = {}
  for layer in _VGG16:
    if layer != "M":
      index, cin, cout = layer
      shapes[f"vgg.conv{index}.kernel"] = (3, 3, cin, cout)
      shapes[f"vgg.conv{index}.bias"] = (cout,)
  for k, c in enumerate(LPIPS_CHANNELS):
    shapes[f"lin{k}"] = (c,)
  return shapes


class LPIPS(nnx.Module):
  """LPIPS distance (VGG16). `lpips(x0, x1)` -> `[B]` float32.

  Randomly initialised (lin weights random non-negative) until weights are loaded with
  `load_weights` or built with `LPIPS.from_file`. Treat it as frozen: the trainer should
  not pass its parameters to the optimizer.
  """

  def __init__(self, *, rngs: nnx.Rngs | None = None):
    rngs = rngs if rngs is not None else nnx.Rngs(0)
    self.vgg = VGG16Features(rngs=rngs)
    for k, c in enumerate(LPIPS_CHANNELS):
      # Trained lin weights are non-negative; random ones are too, so d(x, y) >= 0 holds.
      setattr(self, f"lin{k}", nnx.Param(jax.random.uniform(rngs.params(), (c,)) / c))

  @classmethod
  def from_file(cls, *paths: str | os.PathLike) -> LPIPS:
    """LPIPS with weights from an `.npz` (ours) or PyTorch files (see module docstring)."""
    return cls.from_params(load_lpips_weights(*paths))

  @classmethod
  def from_params(cls, params: Mapping[str, np.ndarray]) -> LPIPS:
    """LPIPS holding `params` (layout of `save_lpips_weights`)."""
    # Shapes only, then the given arrays: no random init to compute (or compile).
    model = nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0)))
    model.load_weights(params)
    return model

  def load_weights(self, params: Mapping[str, np.ndarray]) -> None:
    """Loads a `{name: array}` dict in the layout of `save_lpips_weights`."""
    expected = lpips_weight_shapes()
    missing = sorted(set(expected) - set(params))
    if missing:
      raise ValueError(f"params: missing LPIPS weights {missing[:6]}"
                       f"{' ...' if len(missing) > 6 else ''}")
    for name, shape in expected.items():
      value = np.asarray(params[name], np.float32)
      if value.shape != shape:
        raise ValueError(f"params[{name!r}]: expected shape {shape}, got {value.shape}")
      obj, leaf = self._leaf(name)
      getattr(obj, leaf).set_value(jnp.asarray(value))

  def _leaf(self, name: str):
    parts = name.split(".")
    obj = self
    for part in parts[:-1]:
      obj = getattr(obj, part)
    return obj, parts[-1]

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """Distance per image.

    Args:
      x0, x1: `[B, H, W, 3]` images in [0, 1] (any float dtype; math in float32).
        H, W >= 16 (four 2x2 pools before relu5_3).

    Returns:
      `[B]` float32, 0 for identical images.
    """
    x0, x1 = _check_pair(x0, x1)
    if min(x0.shape[1:3]) < 16:
      raise ValueError(f"x0: LPIPS needs H, W >= 16, got {x0.shape}")
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
    both = (jnp.concatenate([x0, x1]) * 2.0 - 1.0 - shift) / scale
    feats = self.vgg(both)
    b = x0.shape[0]
    total = jnp.zeros((b,), jnp.float32)
    for k, f in enumerate(feats):
      f = f.astype(jnp.float32)
      diff = jnp.square(_unit_normalize(f[:b]) - _unit_normalize(f[b:]))
      per_pixel = jnp.einsum("bhwc,c->bhw", diff, getattr(self, f"lin{k}")[...])
      total = total + jnp.mean(per_pixel, axis=(1, 2))
    return total


# ----------------------------------------------------------------------------------------
# Weight files.
# ----------------------------------------------------------------------------------------
def convert_torch_lpips(*state_dicts: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """PyTorch LPIPS/torchvision state dicts (numpy values) -> jaxtok LPIPS weights.

  Accepted keys (merged over all dicts):
  - torchvision VGG16: `features.{i}.weight` `[O, I, 3, 3]`, `features.{i}.bias`;
  - lpips' full model: `net.slice{k}.{i}.weight` / `.bias` (same i as torchvision);
  - lpips lin layers: `lin{k}.model.{0|1}.weight` `[1, C, 1, 1]` (1 when saved with
    dropout, as in `weights/v0.1/vgg.pth`).

  Returns:
    `{ "vgg.conv{i}.kernel": [3, 3, I, O], "vgg.conv{i}.bias": [O], "lin{k}": [C] }`.
  """
  out: dict[str, np.ndarray] = {}
  for sd in state_dicts:
    for key, value in sd.items():
      value = np.asarray(value, np.float32)
      parts = key.split(".")
      if parts[-1] not in ("weight", "bias"):
        continue
      if parts[0] == "features" and len(parts) == 3:
        index = parts[1]
      elif parts[0] == "net" and len(parts) == 4 and parts[1].startswith("slice"):
        index = parts[2]
      elif parts[0].startswith("lin") and parts[1] == "model" and parts[-1] == "weight":
        out[parts[0]] = value.reshape(-1)
        continue
      else:
        continue
      if parts[-1] == "weight":
        out[f"vgg.conv{index}.kernel"] = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      else:
        out[f"vgg.conv{index}.bias"] = value
  needed = lpips_weight_shapes()
  out = {k: v for k, v in out.items() if k in needed}
  missing = sorted(set(needed) - set(out))
  if missing:
    raise ValueError(f"state_dicts: no LPIPS weights for {missing[:6]}"
                     f"{' ...' if len(missing) > 6 else ''}; pass both lpips' vgg.pth (lin "
                     f"layers) and torchvision's vgg16 weights (features)")
  return out


def save_lpips_weights(path: str | os.PathLike, params: Mapping[str, np.ndarray]) -> None:
  """Writes jaxtok LPIPS weights (from `convert_torch_lpips`) as an `.npz`."""
  np.savez(path, format=np.asarray(WEIGHTS_FORMAT),
           **{k: np.asarray(v, np.float32) for k, v in params.items()})


def _torch_state_dict(path: str) -> dict[str, np.ndarray]:
  if zipfile.is_zipfile(path):  # torch.save of PyTorch >= 1.6: read without torch.
    return torch_pickle.read_checkpoint(path)
  try:
    import torch  # noqa: PLC0415  (optional dependency; legacy pickle files only)
  except ImportError as e:
    raise ValueError(
        f"path: {path!r} is a PyTorch file; reading it needs torch (pip install "
        f"'jaxtok[torch]'), or convert it once elsewhere with "
        f"`python -m jaxtok.nets.perceptual ...` and pass the .npz") from e
  sd = torch.load(path, map_location="cpu", weights_only=True)
  if hasattr(sd, "state_dict"):
    sd = sd.state_dict()
  return {k: v.detach().cpu().numpy() for k, v in sd.items() if hasattr(v, "detach")}


def load_lpips_weights(*paths: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads LPIPS weights from one `.npz` or from PyTorch `.pth`/`.pt` files."""
  if not paths:
    raise ValueError("paths: expected an .npz or PyTorch weight files, got none")
  for p in paths:
    if not os.path.isfile(p):
      raise ValueError(f"paths: {str(p)!r} is not a file")
  if len(paths) == 1 and str(paths[0]).endswith(".npz"):
    with np.load(paths[0], allow_pickle=False) as f:
      fmt = str(f["format"]) if "format" in f.files else None
      if fmt != WEIGHTS_FORMAT:
        raise ValueError(f"paths: {str(paths[0])!r} is not a jaxtok LPIPS file (format "
                         f"{fmt!r}, expected {WEIGHTS_FORMAT!r})")
      return {k: f[k] for k in f.files if k != "format"}
  return convert_torch_lpips(*[_torch_state_dict(str(p)) for p in paths])


# ----------------------------------------------------------------------------------------
# Offline perceptual distance on the FID Inception network.
# ----------------------------------------------------------------------------------------
# Maps compared (after these blocks of the FID Inception): 35x35, 17x17, 8x8 at 299 input.
INCEPTION_TAPS = ("mixed_2", "mixed_7", "mixed_10")


class InceptionPerceptual(nnx.Module):
  """LPIPS-style distance on FID Inception maps, no learned weights: `[B]` float32.

  d(x0, x1) = sum over `taps` of mean_space(mean_channels((n(f0) - n(f1))^2))
              + pool_weight * mean((pool3(x0) - pool3(x1))^2)
  with n = channel unit-normalisation. Inputs are resized (bilinear, as FID does) to
  `size` (299 = FID's; smaller is cheaper, >= 75). Channel means (not sums) keep every
  tap at a comparable scale without learned weights.
  """

  def __init__(self, weights: Mapping[str, np.ndarray] | str | None = None, *,
               size: int = 299, taps: Sequence[str] = INCEPTION_TAPS,
               pool_weight: float = 1.0, network=None):
    if size < 75:
      raise ValueError(f"size: expected >= 75 (Inception's smallest input), got {size}")
    unknown = [t for t in taps if t not in inception.BLOCKS]
    if unknown:
      raise ValueError(f"taps: expected names from {inception.BLOCKS}, got {unknown}")
    self.size = size
    self.taps = tuple(taps)
    self.pool_weight = float(pool_weight)
    if network is None:
      network = inception.InceptionV3FID()
      params = (weights if isinstance(weights, Mapping)
                else inception_weights.load_params(weights))
      network.load_weights(params)
    self.net = network

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """`x0, x1`: `[B, H, W, 3]` in [0, 1] -> `[B]` float32 distances."""
    x0, x1 = _check_pair(x0, x1)
    b = x0.shape[0]
    taps, pool = self.net.features(
        inception.preprocess(jnp.concatenate([x0, x1]), size=self.size), self.taps)
    total = self.pool_weight * jnp.mean(jnp.square(pool[:b] - pool[b:]), axis=-1)
    for f in taps:
      diff = jnp.square(_unit_normalize(f[:b]) - _unit_normalize(f[b:]))
      total = total + jnp.mean(diff, axis=(1, 2, 3))
    return total


def main(argv: Sequence[str]) -> None:
  """`python -m jaxtok.nets.perceptual IN.pth [IN2.pth ...] OUT.npz` (needs torch)."""
  if len(argv) < 2 or not argv[-1].endswith(".npz"):
    raise SystemExit("usage: python -m jaxtok.nets.perceptual vgg.pth "
                     "vgg16-397923af.pth out.npz")
  save_lpips_weights(argv[-1], load_lpips_weights(*argv[:-1]))
  print(f"wrote {argv[-1]}")


if __name__ == "__main__":
  main(sys.argv[1:])
