"""Writes a data set's token shards: one resumable set per host (see `records` for the format).

Work split: the source's records (a deterministic, sorted list) are dealt to hosts like the
trainer deals them (host h takes records h, h + P, h + 2P, ...); each host cuts its list into
shards of `shard_size` records and tokenizes them in order. Which records land in which shard
depends only on (source, number of hosts, shard size), so a resumed run rewrites exactly the
shards that were missing, and the union over hosts is the data set, once.

Each host encodes on a mesh of its own local devices, built with the trainer's mesh code
(`jaxtok.parallel.make_mesh`), with the batch split over every device. The mesh is
host-local on purpose: encoding needs no cross-host communication, so hosts never wait for each
other (a slow or restarted host does not stall the pod) and a host may hold one record more than
another without padding the others.

Crash safety: a shard is written to a hidden temp file, fsynced, renamed to its final name, and
only then listed in the host's `manifest.json` (itself replaced atomically). Unlisted files are
never read; on restart they are deleted and rewritten. A listed shard is kept on restart only
if its size and SHA-256 are those listed and, for folder sources, its images are unchanged
(name, size and mtime of each, `Source.fingerprint`); otherwise it is written again.
Directories inside a host directory are not ours: they are left alone.
"""
from __future__ import annotations

import itertools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
from array_record.python.array_record_module import ArrayRecordWriter
from flax import nnx
from tqdm import tqdm

from jaxtok import api, parallel
from jaxtok import data as data_lib
from jaxtok.api import fingerprint as tokenizer_fingerprint  # The manifest's tokenizer id.
from jaxtok.tokenize import records as rec
from jaxtok.tokenize.sources import Source

_LOG = logging.getLogger(__name__)


class _Load:
  """record index -> {"image": [R, R, 3] uint8, "index", "image_id", "label"} or an error."""

  def __init__(self, source: Source, resolution: int):
    self.source, self.resolution = source, resolution

  def __call__(self, index: int) -> dict[str, Any]:
    try:
      image, image_id, label = self.source.load(index)
      if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
      image = data_lib.center_crop_resize(image, self.resolution)
      return {"image": image, "index": index, "image_id": image_id, "label": label}
    except Exception as e:  # A bad record is skipped and listed in the manifest, never fatal.
      return {"error": f"{type(e).__name__}: {e}", "index": index}


def _commit_shard(tmp: Path, final: Path) -> None:
  """Makes a fully written temp shard durable under its final name."""
  with open(tmp, "rb") as f:
    os.fsync(f.fileno())
  os.replace(tmp, final)
  rec.fsync_dir(final.parent)


def _check_positive(name: str, value: Any) -> int:
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    raise ValueError(f"{name}: expected a positive int, got {value!r}")
  return value


def _spec_mismatch(old: dict[str, Any], new: dict[str, Any]) -> str | None:
  for key in sorted(set(old) | set(new)):
    if old.get(key) != new.get(key):
      return f"{key}: {old.get(key)!r} on disk, {new.get(key)!r} now"
  return None


def tokenize(checkpoint: str | os.PathLike | api.Tokenizer, data: str,
             out: str | os.PathLike, *, batch_size: int = 32, shard_size: int = 4096,
             folder_labels: bool = False, tfds_data_dir: str | None = None,
             image_key: str = "image", read_threads: int = 4, seed: int = 0,
             progress: bool = True, devices: list[jax.Device] | None = None
             ) -> dict[str, Any]:
  """Tokenizes this host's part of `data` into `out` (resuming whatever is already there).

  Args:
    checkpoint: a `jaxtok.load`-able directory, a variant name (`titok:S-128`, random init
      with `seed`) or a `Tokenizer`.
    data: `bundled`, `folder:PATH` or `tfds:NAME[:split]` (`jaxtok.data`'s syntax). Images are
      center-cropped to a square and resized to the tokenizer's `image_size` (bicubic), as
      `jaxtok.data.eval_images` does.
    out: the token directory (created); this host writes `out/host-HHHHH-of-PPPPP/`.
    batch_size: images per encode call on this host; a multiple of the local device count.
    shard_size: records per shard file (the resume granularity).
    folder_labels: label folder images by their class sub-directory (`PATH/<class>/...`).
    tfds_data_dir, image_key: as in `jaxtok.data.DataConfig`.
    read_threads: image decoding threads.
    seed: init seed for a variant name.
    progress: show a tqdm bar (images/s) on the primary process.
    devices: this host's devices to shard batches over (default: every local device).

  Returns:
    A summary: images encoded now, records skipped as unreadable, shards written/skipped
    (already complete), seconds, images/s of the encode loop (decode + encode + write, after
    compilation), compile seconds.
  """
  _check_positive("batch_size", batch_size)
  _check_positive("shard_size", shard_size)
  _check_positive("read_threads", read_threads)
  if not isinstance(data, str):
    raise ValueError(f"data: expected a source string like 'folder:PATH', got {data!r}")
  tok = checkpoint if isinstance(checkpoint, api.Tokenizer) else api.load(checkpoint, seed=seed)
  source = Source(data, folder_labels=folder_labels, tfds_data_dir=tfds_data_dir,
                  image_key=image_key)
  host, hosts = jax.process_index(), jax.process_count()
  if len(source) < hosts:
    raise ValueError(f"data: {data!r} has {len(source)} records, fewer than the {hosts} hosts")
  local = list(range(host, len(source), hosts))
  num_shards = math.ceil(len(local) / shard_size)

  devices = jax.local_devices() if devices is None else devices
  mesh = parallel.make_mesh(parallel.MeshConfig(), devices)
  if batch_size % mesh.size:
    raise ValueError(f"batch_size: expected a multiple of the {mesh.size} local devices, got "
                     f"{batch_size}")
  batch_sharding, replicated = parallel.batch_sharding(mesh), parallel.replicated(mesh)
  ids_dtype = rec.ids_dtype(tok.codebook_size, tok.continuous)
  spec = {"source": data, "num_records": len(source), "num_hosts": hosts,
          "shard_size": shard_size, "image_size": tok.image_size,
          "folder_labels": folder_labels, "image_key": image_key,
          "class_names": source.class_names,
          "tokenizer": {"family": tok.family, "fingerprint": tokenizer_fingerprint(tok),
                        "num_tokens": tok.num_tokens, "codebook_size": tok.codebook_size,
                        "ids_dtype": ids_dtype.str}}

  others = sorted(p.name for p in Path(out).glob("host-*-of-*")
                  if not p.name.endswith(f"-of-{hosts:05d}"))
  if others:
    raise ValueError(f"out: {os.fspath(out)!r} holds shards of a run with another number of "
                     f"hosts ({others[0]}, this run has {hosts}); use a new --out directory")
  host_dir = Path(out) / rec.host_dir_name(host, hosts)
  host_dir.mkdir(parents=True, exist_ok=True)
  manifest_path = host_dir / rec.MANIFEST
  if manifest_path.exists():
    manifest = rec.read_manifest(manifest_path)
    problem = _spec_mismatch(manifest["spec"], spec)
    if problem:
      raise ValueError(f"out: {str(host_dir)!r} holds tokens of a different run ({problem}); "
                       f"use a new --out directory")
  else:
    manifest = {"format": rec.FORMAT_NAME, "format_version": rec.FORMAT_VERSION, "spec": spec,
                "host": host, "host_records": len(local), "num_shards": num_shards,
                "shards": {}, "complete": num_shards == 0,
                "checkpoint": os.fspath(checkpoint) if not isinstance(
                    checkpoint, api.Tokenizer) else None}
  def shard_indices(s: int) -> list[int]:
    return local[s * shard_size:(s + 1) * shard_size]

  # A listed shard is kept only if its file is intact (size and SHA-256 as listed) and the
  # records it was made of are unchanged (`Source.fingerprint`: an edited image is redone).
  shard_of = {rec.shard_name(s, num_shards): s for s in range(num_shards)}
  done = {}
  for name, entry in manifest["shards"].items():
    path = host_dir / name
    problem = None
    if name not in shard_of:
      problem = "is not a shard of this run"
    elif not path.is_file() or path.stat().st_size != entry.get("bytes"):
      problem = "is missing or of the wrong size"
    elif rec.file_sha256(path) != entry.get("sha256"):
      problem = "does not match its listed SHA-256"
    elif entry.get("inputs") != source.fingerprint(shard_indices(shard_of[name])):
      problem = "was made from images that changed since"
    if problem is None:
      done[name] = entry
    else:
      _LOG.warning("tokenize: listed shard %s %s; rewriting it", path, problem)
  manifest["shards"] = done
  manifest["complete"] = len(done) == num_shards
  rec.write_json_atomic(manifest_path, manifest)
  listed = set(done)
  for path in host_dir.iterdir():  # Leftovers of a crash: temp files, unlisted shards.
    if path.name == rec.MANIFEST or path.name in listed:
      continue
    if path.is_dir():  # Not something tokenize writes: left alone.
      _LOG.warning("tokenize: ignoring the directory %s (tokenize writes only files)", path)
      continue
    path.unlink()

  state = jax.device_put(nnx.state(tok.model), replicated)
  t0 = time.perf_counter()
  # The Tokenizer's own encode body (uint8/float handling and dtype of the ids), jitted over
  # the mesh: ids are those of `tok.encode`, the batch split over every device.
  image_struct = jax.ShapeDtypeStruct((batch_size, tok.image_size, tok.image_size, 3),
                                      np.uint8, sharding=batch_sharding)
  encode = jax.jit(tok._encode_body, in_shardings=(replicated, batch_sharding),
                   out_shardings=batch_sharding).lower(state, image_struct).compile()
  compile_s = time.perf_counter() - t0

  already = sum(e["examples"] + len(e["skipped"]) for e in done.values())
  primary = jax.process_index() == 0
  bar = tqdm(total=len(local), initial=already, unit="img", dynamic_ncols=True,
             desc=f"tokenize {host_dir.name}", disable=not (progress and primary))
  loader = _Load(source, tok.image_size)
  stats = {"images": 0, "skipped": 0, "shards_written": 0, "shards_skipped": len(done)}
  t_loop = time.perf_counter()

  def flush(pending, writer):
    out_ids, chunk = pending
    ids = np.asarray(out_ids)[:len(chunk)]
    for row, element in zip(ids, chunk):
      writer.write(rec.encode_example(row, ids_dtype, element["index"], element["image_id"],
                                      element["label"]))
    stats["images"] += len(chunk)
    bar.update(len(chunk))

  for s in range(num_shards):
    name = rec.shard_name(s, num_shards)
    if name in done:
      continue
    indices = shard_indices(s)
    inputs = source.fingerprint(indices)  # Before reading: an edit meanwhile is redone.
    elements = grain.MapDataset.source(indices).map(loader).to_iter_dataset(
        grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * batch_size))
    tmp = host_dir / f".{name}.tmp-{os.getpid()}"
    writer = ArrayRecordWriter(os.fspath(tmp), rec.WRITER_OPTIONS)
    skipped, chunk, pending, examples = [], [], None, 0
    for element in itertools.chain(elements, [None]):  # None: end of shard.
      if element is not None and "error" in element:
        skipped.append({"index": element["index"], "error": element["error"]})
        _LOG.warning("tokenize: skipped unreadable record %d: %s", element["index"],
                     element["error"])
        bar.update(1)
        continue
      if element is not None:
        chunk.append(element)
      if len(chunk) == batch_size or (element is None and chunk):
        images = np.stack([e["image"] for e in chunk])
        if len(chunk) < batch_size:  # Pad the last batch: one compiled shape.
          images = np.concatenate([images, np.repeat(images[-1:], batch_size - len(chunk), 0)])
        x = data_lib.to_global_batch({"image": images}, batch_sharding)["image"]
        ids = encode(state, x)  # Asynchronous: the previous batch is written meanwhile.
        if pending is not None:
          flush(pending, writer)
        pending, examples = (ids, chunk), examples + len(chunk)
        chunk = []
    if pending is not None:
      flush(pending, writer)
    writer.close()
    final = host_dir / name
    _commit_shard(tmp, final)
    done[name] = {"examples": examples, "skipped": skipped, "bytes": final.stat().st_size,
                  "sha256": rec.file_sha256(final), "inputs": inputs,
                  "first_index": indices[0], "last_index": indices[-1]}
    manifest["shards"] = dict(sorted(done.items()))
    manifest["complete"] = len(done) == num_shards
    rec.write_json_atomic(manifest_path, manifest)
    stats["skipped"] += len(skipped)
    stats["shards_written"] += 1
    bar.set_postfix(shards=f"{len(done)}/{num_shards}")
  bar.close()
  seconds = time.perf_counter() - t_loop
  return {"host": host, "num_hosts": hosts, "devices": mesh.size, "batch_size": batch_size,
          **stats, "num_shards": num_shards, "complete": manifest["complete"],
          "seconds": round(seconds, 3), "compile_s": round(compile_s, 3),
          "images_per_s": round(stats["images"] / seconds, 3) if stats["images"] else None,
          "out": os.fspath(out)}
