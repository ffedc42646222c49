"""Frozen semantic teachers for FQGAN's alignment loss and REPA-style feature losses.

The interface every teacher follows: `teacher(images)` with images `[B, H, W, 3]` float in
[0, 1] (or uint8) -> `TeacherFeatures(cls [B, W], patches [B, N, W])` float32, computed under
`stop_gradient`; `teacher.width` is W. Each teacher does its own input preprocessing.

- `ViTTeacher`: the released teachers, Flax ports of the Hugging Face towers
  (`jaxtok.nets.vit`: DINOv2 `Dinov2Model`, CLIP `CLIPVisionModel`) loaded from a directory
  with their `config.json` + `model.safetensors` (nothing is ever downloaded): DINOv2-S/14
  (`facebook/dinov2-small`, 384 wide) and CLIP ViT-B/16 (`openai/clip-vit-base-patch16`, 768)
  for FQGAN-Triple, CLIP ViT-L/14 (`openai/clip-vit-large-patch14`, 1024) for FQGAN-Dual.
  Preprocessing as FQGAN's official `ScalingLayer` (showlab/FQGAN `tokenizer/models/
  {clip,dino}_encoder.py`): PyTorch's legacy nearest resize to 224 x 224 (DINOv2; CLIP: its
  `image_size`, 224 for both towers), then the tower's mean / std (ImageNet for DINOv2,
  OpenAI's for CLIP); `resize="bicubic"` is PyTorch's bicubic instead (REPA's). DINOv2 at 224
  uses its 518-px position table bicubic-interpolated to the 16 x 16 grid, as `transformers`
  does. Features: `patches` = `last_hidden_state[:, 1:]`; `cls` = `last_hidden_state[:, 0]`,
  which is what FQGAN aligns to (DINOv2: `last_hidden_state[:, 0]`, after the final norm;
  CLIP: `hidden_states[-1][:, 0]`, *before* `post_layernorm`). `cls_feature="pooled"` gives HF's
  `pooler_output` instead (CLIP: `post_layernorm` of that token; DINOv2: the same token).
- `InceptionTeacher`: the FID Inception network (`jaxtok.nets.inception`), available offline
  as a stand-in: its feature map after block `tap` gives the patch features and their global
  mean the CLS feature (pool3 for the last block, 2048 wide; `mixed_2`, 288 wide, is the CPU
  variants' choice).

Names (`build_teacher`, `teacher_width`; `config.loss.semantic_teacher`): "inception[:<block>
[:<size>]]"; "dinov2:<dir>" / "clip:<dir>" (a Hugging Face model directory, e.g. a Hub
snapshot or a `save_pretrained` output); a released name such as "facebook/dinov2-small",
found in the local Hugging Face cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
`~/.cache/huggingface/hub`) when it is there.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.nets import inception, inception_weights, vit

# Channels after each FID Inception block.
INCEPTION_WIDTHS = {"mixed": 256, "mixed_1": 288, "mixed_2": 288, "mixed_3": 768,
                    "mixed_4": 768, "mixed_5": 768, "mixed_6": 768, "mixed_7": 768,
                    "mixed_8": 1280, "mixed_9": 2048, "mixed_10": 2048}
# The released FQGAN teachers (Hugging Face names) and their feature widths / tower kinds.
RELEASED_TEACHERS = {"openai/clip-vit-large-patch14": 1024, "openai/clip-vit-base-patch16": 768,
                     "facebook/dinov2-small": 384}
RELEASED_KINDS = {"openai/clip-vit-large-patch14": "clip", "openai/clip-vit-base-patch16": "clip",
                  "facebook/dinov2-small": "dinov2"}
# Input normalisation of each tower (FQGAN's `ScalingLayer`, the HF image processors' values).
NORMALISATION = {"dinov2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                 "clip": ((0.48145466, 0.4578275, 0.40821073),
                          (0.26862954, 0.26130258, 0.27577711))}
# FQGAN's teacher input side (`ScalingLayer`); DINOv2's HF processor crops to it too.
TEACHER_INPUT_SIZE = 224
RESIZES = ("nearest", "bicubic")
CLS_FEATURES = ("token", "pooled")


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


def nearest_rows(in_size: int, out_size: int) -> np.ndarray:
  """Source index of each output row of PyTorch's legacy 'nearest' resize: floor(dst*in/out)."""
  return (np.arange(out_size) * in_size // out_size).astype(np.int32)


class ViTTeacher(nnx.Module):
  """A DINOv2 / CLIP vision tower (`jaxtok.nets.vit`) as a frozen teacher.

  Args:
    path: a Hugging Face model directory holding `config.json` and `model.safetensors`
      (`Dinov2Model` / `CLIPVisionModel` / whole `CLIPModel` files). Or pass `config` and
      `rngs` instead for random weights (tests).
    kind: "dinov2" or "clip"; None reads it from the config's `model_type`.
    config: the tower's sizes (with `rngs`, instead of `path`).
    size: the side the images are resized to (None: 224 as FQGAN for DINOv2, the tower's
      `image_size` for CLIP). A multiple of the patch size keeps every pixel in a patch.
    resize: "nearest" (FQGAN's: PyTorch's legacy nearest) or "bicubic" (PyTorch's bicubic,
      `align_corners=False`, no antialias; as REPA resizes for DINOv2).
    cls_feature: "token" (`last_hidden_state[:, 0]`, FQGAN's CLS; for CLIP before
      `post_layernorm`) or "pooled" (HF's `pooler_output`).
    precision: matmul precision of the tower.
  """

  def __init__(self, path: str | os.PathLike | None = None, *, kind: str | None = None,
               config: vit.ViTTowerConfig | None = None, size: int | None = None,
               resize: str = "nearest", cls_feature: str = "token",
               precision: str | None = "highest", rngs: nnx.Rngs | None = None):
    if (path is None) == (config is None):
      raise ValueError("path: expected a Hugging Face model directory, or config= (with "
                       "rngs=) for random weights; got "
                       f"{'both' if path is not None else 'neither'}")
    if resize not in RESIZES:
      raise ValueError(f"resize: expected one of {RESIZES}, got {resize!r}")
    if cls_feature not in CLS_FEATURES:
      raise ValueError(f"cls_feature: expected one of {CLS_FEATURES}, got {cls_feature!r}")
    if path is not None:
      kind = kind or _model_kind(vit.read_hf_config(path), path)
      if kind not in vit.KINDS:
        raise ValueError(f"kind: expected one of {vit.KINDS}, got {kind!r}")
      self.tower = vit.from_pretrained(kind, path, precision=precision)
    else:
      if rngs is None:
        raise ValueError("rngs: expected nnx.Rngs with config= (random weights), got None")
      if kind is not None and kind != config.kind:
        raise ValueError(f"kind: {kind!r} disagrees with config.kind {config.kind!r}")
      self.tower = vit.ViTTower(config, precision=precision, rngs=rngs)
    cfg = self.tower.config
    default = TEACHER_INPUT_SIZE if cfg.kind == "dinov2" else cfg.image_size
    size = default if size is None else size
    if not isinstance(size, int) or size < cfg.patch_size:
      raise ValueError(f"size: expected an int >= the patch size {cfg.patch_size}, got "
                       f"{size!r}")
    self.kind, self.width, self.size = cfg.kind, cfg.width, size
    self.resize, self.cls_feature = resize, cls_feature
    self.mean, self.std = NORMALISATION[cfg.kind]

  def preprocess(self, images: jax.Array) -> jax.Array:
    """`[B, H, W, 3]` in [0, 1] (or uint8) -> `[B, size, size, 3]` resized and normalised."""
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"images: expected [B, H, W, 3] in [0, 1], got shape "
                       f"{tuple(images.shape)}")
    x = inception.to_unit_float(images)
    _, h, w, _ = x.shape
    s = self.size
    if self.resize == "nearest":
      if h != s:
        x = x[:, jnp.asarray(nearest_rows(h, s))]
      if w != s:
        x = x[:, :, jnp.asarray(nearest_rows(w, s))]
    else:
      x = vit.resize_grid(x, s, s, precision=self.tower.precision)
    return (x - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)

  def __call__(self, images: jax.Array) -> TeacherFeatures:
    hidden, pooled = self.tower(self.preprocess(images))
    cls = hidden[:, 0] if self.cls_feature == "token" else pooled
    return TeacherFeatures(jax.lax.stop_gradient(cls.astype(jnp.float32)),
                           jax.lax.stop_gradient(hidden[:, 1:].astype(jnp.float32)))


def _model_kind(hf_config: dict, path) -> str:
  """"dinov2" / "clip" from a config.json's `model_type`."""
  model_type = hf_config.get("model_type")
  for kind, types in (("dinov2", ("dinov2",)), ("clip", ("clip", "clip_vision_model"))):
    if model_type in types:
      return kind
  raise ValueError(f"path: {os.fspath(path)!r} holds a {model_type!r} config; expected a "
                   f"DINOv2 ('dinov2') or CLIP ('clip', 'clip_vision_model') model")


def hf_cache_dir(name: str) -> Path | None:
  """The local Hugging Face Hub cache snapshot of model `name` ("org/model") that holds
  `config.json` and `model.safetensors`, or None. Looks in `HF_HUB_CACHE`, else `HF_HOME/hub`,
  else `~/.cache/huggingface/hub` (refs/main first); never downloads."""
  root = (os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
          or os.path.join(os.environ.get("HF_HOME") or "~/.cache/huggingface", "hub"))
  repo = Path(root).expanduser() / ("models--" + name.replace("/", "--"))
  snapshots = repo / "snapshots"
  candidates = []
  ref = repo / "refs" / "main"
  if ref.is_file():
    candidates.append(snapshots / ref.read_text().strip())
  if snapshots.is_dir():
    candidates += sorted(snapshots.iterdir())
  for snap in candidates:
    if (snap / vit.CONFIG_FILE).is_file() and (snap / vit.WEIGHTS_FILE).is_file():
      return snap
  return None


def _tower_spec(name: str) -> tuple[str, str] | None:
  """'dinov2:<dir>' / 'clip:<dir>' -> (kind, dir); None for other names."""
  kind, colon, path = name.partition(":")
  if not colon or kind not in vit.KINDS:
    return None
  if not path:
    raise ValueError(f"name: expected '{kind}:<directory with config.json and "
                     f"model.safetensors>', got {name!r}")
  return kind, path


def _released_dir(name: str) -> Path:
  found = hf_cache_dir(name)
  if found is None:
    raise ValueError(f"name: the released teacher {name!r} is not in the local Hugging Face "
                     f"cache (HF_HUB_CACHE / HF_HOME; jaxtok never downloads): put its "
                     f"config.json and model.safetensors in a directory and name it "
                     f"'{RELEASED_KINDS[name]}:<dir>', or use an offline stand-in "
                     f"('inception' or 'inception:<block>')")
  return found


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
  """A teacher by name.

  - "inception" (pool3, 2048), "inception:<block>" (e.g. "inception:mixed_2", 288 wide) or
    "inception:<block>:<size>" (input resized to size x size instead of 299: cheaper for
    small images); `weights` / `rngs` as `InceptionTeacher` takes them.
  - "dinov2:<dir>" / "clip:<dir>": `ViTTeacher` from a Hugging Face model directory.
  - "facebook/dinov2-small", "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14":
    `ViTTeacher` from the local Hugging Face cache (`hf_cache_dir`); never downloaded.
  """
  if name == "inception" or name.startswith("inception:"):
    tap, size = _inception_spec(name)
    return InceptionTeacher(weights, tap=tap, size=size, rngs=rngs)
  tower = _tower_spec(name)
  if tower is not None:
    return ViTTeacher(tower[1], kind=tower[0])
  if name in RELEASED_TEACHERS:
    return ViTTeacher(_released_dir(name), kind=RELEASED_KINDS[name])
  raise ValueError(f"name: expected 'inception', 'inception:<block>[:<size>]' (blocks "
                   f"{list(INCEPTION_WIDTHS)}), 'dinov2:<dir>', 'clip:<dir>' or one of "
                   f"{list(RELEASED_TEACHERS)}, got {name!r}")


def teacher_width(name: str) -> int:
  """Feature width W of a teacher name (without building it; "dinov2:<dir>" / "clip:<dir>"
  read the directory's config.json)."""
  if name == "inception" or name.startswith("inception:"):
    return INCEPTION_WIDTHS[_inception_spec(name)[0]]
  tower = _tower_spec(name)
  if tower is not None:
    return vit.config_from_hf(tower[0], vit.read_hf_config(tower[1])).width
  if name in RELEASED_TEACHERS:
    return RELEASED_TEACHERS[name]
  raise ValueError(f"name: unknown teacher {name!r}")


__all__ = ["CLS_FEATURES", "INCEPTION_WIDTHS", "InceptionTeacher", "NORMALISATION",
           "RELEASED_KINDS", "RELEASED_TEACHERS", "RESIZES", "TEACHER_INPUT_SIZE",
           "TeacherFeatures", "ViTTeacher", "build_teacher", "hf_cache_dir", "nearest_rows",
           "teacher_width"]
