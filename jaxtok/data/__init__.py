"""Image data for training and evaluation: bundled photos, folders, WebDataset shards, Hugging
Face datasets on disk and tfds datasets.

    from jaxtok import data
    cfg = data.DataConfig(source="folder:/images", resolution=256)
    it = data.create_train_iterator(cfg, batch_size=32)      # {"image": uint8 [32, R, R, 3]}
    held_out = data.eval_images("bundled", 256)              # uint8 [4, R, R, 3]

A source is named by a string: `bundled` (photos shipped inside scikit-image, scikit-learn and
matplotlib; `HELD_OUT` of them are never trained on), `folder:PATH`, `wds:PATTERN`,
`hf:PATH[:SPLIT]` or `tfds:NAME[:SPLIT]`.

- `sources`: parsing a source string, listing its records, reading one (`open_source`);
- `bundled`: the bundled photos and the held-out set;
- `images`: decoding to `[H, W, 3]` uint8 and square crops;
- `augment`: the random crops, flips and colour jitter of training;
- `config`: `DataConfig` (the trainer's `config.data`);
- `pipeline`: the checkpointable, per-host grain training stream;
- `eval_sets`: deterministic evaluation images (center crops, tiles).
"""
from jaxtok.data.augment import augment_colors, random_crop_resize
from jaxtok.data.bundled import HELD_OUT, bundled_photos, bundled_train_names
from jaxtok.data.config import DataConfig, check_resolution
from jaxtok.data.eval_sets import eval_images, eval_tiles
from jaxtok.data.images import center_crop_resize, crop_resize, decode_image, to_rgb_uint8
from jaxtok.data.pipeline import TrainIterator, create_train_iterator, host_records, to_global_batch
from jaxtok.data.sources import (
  BUNDLED_SETS,
  IMAGE_EXTENSIONS,
  BundledReader,
  FileReader,
  HfReader,
  SourceSpec,
  TarMember,
  TarReader,
  TfdsReader,
  expand_braces,
  index_shard,
  list_image_files,
  list_shards,
  open_hf,
  open_source,
  open_tfds,
  parse_source,
)

__all__ = ["BUNDLED_SETS", "HELD_OUT", "IMAGE_EXTENSIONS", "BundledReader", "DataConfig",
           "FileReader", "HfReader", "SourceSpec", "TarMember", "TarReader", "TfdsReader",
           "TrainIterator", "augment_colors", "expand_braces", "index_shard", "list_shards",
           "open_hf",
           "bundled_photos", "bundled_train_names", "center_crop_resize", "check_resolution",
           "create_train_iterator", "crop_resize", "decode_image", "eval_images", "eval_tiles",
           "host_records", "list_image_files", "open_source", "open_tfds", "parse_source",
           "random_crop_resize", "to_global_batch", "to_rgb_uint8"]
