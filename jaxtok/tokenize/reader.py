"""Reads a token directory back: a random-access grain data source over every host's shards."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import grain

from jaxtok.tokenize import records as rec

_HOST_DIR = re.compile(r"host-(\d{5})-of-(\d{5})$")


class TokenShards:
  """Every example of a token directory, by position (host 0's shards first, then host 1's...).

  A grain random-access data source (`len`, `[i]`; picklable, so `grain.MapDataset.source(
  read(DIR))` works with worker processes). `[i]` returns `{"ids": int32 [K] (or [K, k]),
  "index": int (position in the source), "image_id": str[, "label": int]}`.

  Attributes:
    spec: the run's spec (source, tokenizer identity, host split, shard size, class names).
    manifests: every host's manifest, by host.
    skipped: `[{"index", "error"}]` records left out as unreadable, every host.
    paths: the shard files read, in order.
  """

  def __init__(self, directory: str | os.PathLike, *, allow_partial: bool = False,
               verify: bool = False):
    root = Path(directory)
    if not root.is_dir():
      raise ValueError(f"directory: {str(root)!r} does not exist or is not a directory")
    hosts = [(m, p) for p in sorted(root.iterdir()) if (m := _HOST_DIR.match(p.name))]
    if not hosts:
      raise ValueError(f"directory: {str(root)!r} holds no host-HHHHH-of-PPPPP directories; "
                       f"expected the output of `python -m jaxtok.tokenize`")
    counts = {int(m.group(2)) for m, _ in hosts}
    if len(counts) != 1:
      raise ValueError(f"directory: {str(root)!r} mixes runs with different host counts "
                       f"{sorted(counts)}")
    num_hosts = counts.pop()
    present = {int(m.group(1)): p for m, p in hosts}
    missing = sorted(set(range(num_hosts)) - set(present))
    if missing and not allow_partial:
      raise ValueError(f"directory: hosts {missing} of {num_hosts} wrote nothing yet "
                       f"(pass allow_partial=True to read what is there)")
    self.manifests: dict[int, dict[str, Any]] = {}
    self.paths: list[Path] = []
    self.skipped: list[dict[str, Any]] = []
    self.spec: dict[str, Any] | None = None
    incomplete = []
    for host, host_dir in sorted(present.items()):
      manifest = rec.read_manifest(host_dir / rec.MANIFEST)
      if self.spec is None:
        self.spec = manifest["spec"]
      elif manifest["spec"] != self.spec:
        raise ValueError(f"directory: host {host}'s manifest describes another run than "
                         f"host 0's (spec {manifest['spec']} vs {self.spec})")
      self.manifests[host] = manifest
      if not manifest["complete"]:
        incomplete.append(f"host {host}: {len(manifest['shards'])}/"
                          f"{manifest['num_shards']} shards")
      for name, entry in sorted(manifest["shards"].items()):
        path = host_dir / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
          raise ValueError(f"directory: shard {str(path)!r} is missing or not the size its "
                           f"manifest lists ({entry['bytes']} bytes)")
        if verify and rec.file_sha256(path) != entry["sha256"]:
          raise ValueError(f"directory: shard {str(path)!r} does not match its sha256")
        self.skipped += entry["skipped"]
        if entry["examples"]:
          self.paths.append(path)
    if incomplete and not allow_partial:
      raise ValueError(f"directory: {str(root)!r} is not complete ({'; '.join(incomplete)}); "
                       f"rerun the same command to finish it, or pass allow_partial=True")
    self._source = (grain.sources.ArrayRecordDataSource([os.fspath(p) for p in self.paths])
                    if self.paths else None)
    expected = sum(e["examples"] for m in self.manifests.values()
                   for e in m["shards"].values())
    if len(self) != expected:
      raise ValueError(f"directory: the shards hold {len(self)} records but the manifests "
                       f"list {expected}")

  def __len__(self) -> int:
    return 0 if self._source is None else len(self._source)

  def __getitem__(self, index: int) -> dict[str, Any]:
    if self._source is None:
      raise IndexError(f"index {index} out of range: no examples")
    return rec.decode_example(self._source[index])

  def __repr__(self) -> str:
    return (f"TokenShards({len(self)} examples, {len(self.paths)} shards, "
            f"{len(self.manifests)} hosts, source={self.spec and self.spec['source']!r})")


def read(directory: str | os.PathLike, *, allow_partial: bool = False,
         verify: bool = False) -> TokenShards:
  """The examples of a token directory (`python -m jaxtok.tokenize --out DIR`).

  Args:
    directory: the `--out` directory.
    allow_partial: read the finished shards of an unfinished run instead of refusing it.
    verify: check every shard against the sha256 its manifest lists.

  Returns:
    A `TokenShards` grain data source.
  """
  return TokenShards(directory, allow_partial=allow_partial, verify=verify)
