"""Helpers of the data tests: image files on disk and a tiny prepared tfds dataset."""
import io

import numpy as np
from PIL import Image


def take(it, n):
  """The images of the next `n` batches of a training iterator."""
  return [next(it)["image"] for _ in range(n)]


def write_image(path, seed, size=(40, 56), fmt=None):
  """Writes a random RGB image to `path` (format from the suffix unless `fmt`); returns it."""
  rng = np.random.default_rng(seed)
  array = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path, format=fmt)
  return array


def _tiny_tfds_builder():
  """The tiny tfds builder class, defined (and so registered with tfds) once per process.

  Other test modules import this file too (possibly under another module name), so the
  registry, not a module global, says whether the class exists.
  """
  import tensorflow_datasets as tfds  # noqa: PLC0415  (lazy: pulls in TensorFlow)
  try:
    return tfds.builder_cls("jaxtok_tiny_photos")
  except tfds.core.registered.DatasetNotFoundError:
    pass

  class JaxtokTinyPhotos(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    # A builder defined inside a test module has no package to look up checksums in.
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(None, None, 3)),
          "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples(0, 7),
              "validation": self._generate_examples(100, 3)}

    def _generate_examples(self, start, n):
      for i in range(start, start + n):
        yield i, {"image": tiny_tfds_png(i), "label": i % 3}

  return JaxtokTinyPhotos


def tiny_tfds_png(i):
  """The PNG bytes of example `i` of the tiny tfds dataset (train: 0..6, validation: 100..102)."""
  rng = np.random.default_rng(i)
  array = rng.integers(0, 256, size=(20 + i % 5, 30, 3), dtype=np.uint8)
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def prepare_tiny_tfds(data_dir):
  """Writes a tiny array_record tfds dataset; images given as PNG bytes need no TF."""
  _tiny_tfds_builder()(data_dir=str(data_dir), file_format="array_record").download_and_prepare()
  return "jaxtok_tiny_photos"


def id_png(i: int, size=(12, 16)) -> bytes:
  """PNG bytes of a flat image whose colour encodes `i` (R = i % 256, G = i // 256, B = 77):
  every crop / resize / flip of it still says which record it was (`colour_id`)."""
  array = np.empty(size + (3,), np.uint8)
  array[...] = (i % 256, i // 256, 77)
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def colour_id(image: np.ndarray) -> int:
  """The `i` of an `id_png(i)` image (or of any crop of it)."""
  r, g, _ = (int(v) for v in image[image.shape[0] // 2, image.shape[1] // 2])
  return r + 256 * g


def write_wds_shards(folder, counts, *, labels=True, extra=True, start=0):
  """WebDataset tar shards `folder/shard-000000.tar`, ...: shard j holds `counts[j]` samples,
  each `KEY.png` (= `id_png(i)`), `KEY.cls` (i % 5) and `KEY.json`; returns the shard paths."""
  import tarfile  # noqa: PLC0415
  folder.mkdir(parents=True, exist_ok=True)
  paths, i = [], start
  for j, n in enumerate(counts):
    path = folder / f"shard-{j:06d}.tar"
    with tarfile.open(path, "w") as tar:
      for _ in range(n):
        key = f"sample{i:06d}"
        members = {f"{key}.png": id_png(i)}
        if labels:
          members[f"{key}.cls"] = str(i % 5).encode()
        if extra:
          members[f"{key}.json"] = b'{"i": %d}' % i
        for name, payload in members.items():
          info = tarfile.TarInfo(name)
          info.size = len(payload)
          tar.addfile(info, io.BytesIO(payload))
        i += 1
    paths.append(path)
  return paths


def write_hf_parquet(folder, n, *, start=0, files=2):
  """A Hugging Face dataset of `n` rows (`image`: an Image feature of `id_png(i)`, `label`,
  `id`) written by `datasets` as `files` parquet files under `folder`; returns the folder."""
  import datasets  # noqa: PLC0415
  ds = datasets.Dataset.from_dict(
      {"image": [{"bytes": id_png(i), "path": None} for i in range(start, start + n)],
       "label": [i % 5 for i in range(start, start + n)],
       "id": [f"row{i}" for i in range(start, start + n)]},
      features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                  "id": datasets.Value("string")}))
  folder.mkdir(parents=True, exist_ok=True)
  per = -(-n // files)
  for j in range(files):
    ds.select(range(j * per, min(n, (j + 1) * per))).to_parquet(str(folder / f"{j:05d}.parquet"))
  return folder
