"""THE data config (`DataConfig`, `config.data` of the trainer) and its checks."""
# No `from __future__ import annotations`: config_flags reads DataConfig's field types.
import dataclasses
from typing import Any

from jaxtok.data.sources import parse_source


@dataclasses.dataclass(kw_only=True)
class DataConfig:
  """THE data config: training stream and held-out images (`config.data` of the trainer).

  Attributes:
    source: training images: `bundled`, `folder:PATH`, `wds:PATTERN` (WebDataset tar shards),
      `hf:PATH[:split]` (a Hugging Face dataset on disk) or `tfds:NAME[:split]` (see
      `jaxtok.data.sources`).
    eval_source: held-out images for PSNR, grids and evaluators (same syntax; `bundled` =
      the `HELD_OUT` photos).
    resolution: output side R in pixels. None = the model's `image_size` (the trainer fills
      it in and rejects any other value: the model config is the one source of truth).
    num_eval_images: how many `eval_source` images the trainer evaluates and draws.
    crop_scale: (min, max) fraction of the shorter side's square area covered by the
      random square crop; (1.0, 1.0) = "resize shorter side + random crop" (the TiTok
      ImageNet recipe, arXiv 2406.07550).
    flip: random horizontal flips.
    color_jitter: strength s in [0, 1] of a per-image colour augmentation (0 = off): a random
      permutation of the RGB channels with probability s, a hue rotation of up to s * 180
      degrees around the grey axis, saturation x U(1 - s/2, 1 + s/2) and brightness
      +- s/4 (`augment_colors`). Few training photos (`bundled`) otherwise teach the model
      the colours of those photos; ImageNet recipes leave it off.
    seed: seed of the shuffle and the crops (overridable in `create_train_iterator`); the
      trainer's model init has its own seed (`TrainConfig.seed`).
    shuffle: shuffle records each epoch (off: file order, still infinite).
    num_workers: grain worker processes (0 = decode in threads of this process).
    read_threads: decoding threads (per process).
    prefetch: elements buffered ahead by the reading threads.
    include_held_out: for `bundled`, also train on `HELD_OUT` (off by default so that
      held-out metrics stay honest).
    tfds_data_dir: data_dir for `tfds:` sources (None = tfds' default).
    image_key: the image feature of `tfds:` examples, the image column of `hf:` datasets.
  """
  source: str = "bundled"
  eval_source: str = "bundled"
  resolution: int | None = None
  num_eval_images: int = 8
  crop_scale: tuple[float, float] = (0.25, 1.0)
  flip: bool = True
  color_jitter: float = 0.0
  seed: int = 0
  shuffle: bool = True
  num_workers: int = 0
  read_threads: int = 4
  prefetch: int = 64
  include_held_out: bool = False
  tfds_data_dir: str | None = None
  image_key: str = "image"

  def validate(self) -> None:
    """Raises ValueError naming the first bad field (`resolution` None is allowed here)."""
    parse_source(self.source)
    parse_source(self.eval_source)
    if self.resolution is not None:
      check_resolution(self.resolution)
    if not isinstance(self.num_eval_images, int) or self.num_eval_images < 1:
      raise ValueError(f"num_eval_images: expected a positive int, got "
                       f"{self.num_eval_images!r}")
    lo, hi = self.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise ValueError(f"crop_scale: expected 0 < min <= max <= 1, got {self.crop_scale!r}")
    if not 0.0 <= self.color_jitter <= 1.0:
      raise ValueError(f"color_jitter: expected a strength in [0, 1], got {self.color_jitter!r}")
    if self.num_workers < 0 or self.read_threads < 1 or self.prefetch < 1:
      raise ValueError(f"num_workers >= 0, read_threads >= 1, prefetch >= 1 expected, got "
                       f"{self.num_workers}, {self.read_threads}, {self.prefetch}")


def check_resolution(resolution: Any) -> int:
  """`resolution` itself if it is a positive int; else ValueError naming it."""
  if not isinstance(resolution, int) or isinstance(resolution, bool) or resolution <= 0:
    raise ValueError(f"resolution: expected a positive int, got {resolution!r}")
  return resolution
