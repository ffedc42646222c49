"""Released weights by name: `jaxtok.load("hf:ORG/NAME[@REVISION][/FILE]")`.

    tok = jaxtok.load("hf:yucornetto/tokenizer_titok_l32_imagenet")
    tok = jaxtok.load("hf:ZechenBai/FQGAN/fqgan_dual_ds16.pt")     # one file of a repo
    tok = jaxtok.load("hf:EPFL-VILAB/flextok_d18_d28_dfn@main", family="flextok")

The files come from the Hugging Face hub through `huggingface_hub` (or its cache; with
`HF_HUB_OFFLINE=1` from the cache only), their format is the registered release's
(`RELEASES`) or is recognised from the files (`formats.FORMATS`), and the family's torch-free
converter turns them into a jaxtok checkpoint directory kept under `JAXTOK_CACHE` (default
`~/.cache/jaxtok`), keyed by repo, resolved commit, file and converter options: a second load
reads that directory and converts nothing. A jaxtok checkpoint directory pushed to the hub
loads as it is. Nothing from the hub is executed: safetensors and torch zip files are read
with numpy (an allow-list unpickler), configs as data.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxtok.hub import formats
from jaxtok.hub.fetch import (
  PREFIX,
  HubError,
  HubRef,
  Snapshot,
  hf_cache_dir,
  jaxtok_cache_dir,
  missing_file,
  offline,
  parse,
  resolve,
)
from jaxtok.hub.releases import RELEASES, Release, find_release
from jaxtok.io import checkpoint as ckpt_format
from jaxtok.tokenizers import Family, get_family, load_dir
from jaxtok.tokenizers.convert import convert_official

# Bump when a converter's output for the same files changes: older cache entries are ignored.
CACHE_VERSION = 1
_SHA = re.compile(r"^[0-9a-f]{40}$")


def is_hub_name(name: Any) -> bool:
  """Whether `name` is a `hf:` name."""
  return isinstance(name, str) and name.startswith(PREFIX)


def _options_key(options: Mapping[str, Any]) -> str:
  text = json.dumps({"v": CACHE_VERSION, "options": options},
                    sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def converted_dir(ref: HubRef, sha: str, options: Mapping[str, Any] | None = None) -> Path:
  """Where the conversion of `ref` at commit `sha` with converter `options` is kept."""
  file = ref.filename.replace("/", "--") if ref.filename else "_repo"
  return (jaxtok_cache_dir() / "hub" / ref.repo.replace("/", "--") / sha
          / f"{file}-{_options_key(options or {})}")


def _cached(out: Path) -> tuple[Family, Any] | None:
  if (out / ckpt_format.CONFIG_FILE).is_file() and (out / ckpt_format.WEIGHTS_FILE).is_file():
    return load_dir(out)
  return None


def load(name: str, *, family: str | None = None, **options: Any) -> tuple[Family, Any]:
  """(Family, model) of the release `name`.

  Args:
    name: `"hf:ORG/NAME[@REVISION][/FILE]"`: a model repo, at a branch, tag or commit (default
      "main"), optionally one FILE of it (repos holding several checkpoints).
    family: the family the caller expects; a release of another family is an error. Needed
      for a FILE of no recognisable format (with the converter's options).
    **options: the family converter's options (`jaxtok.tokenizers.convert.convert_official`):
      e.g. `vae_scaling_factor=` (FlexTok), `variant=` / `config=` (FQGAN), `config=`,
      `heads=`, `size_table=` (TiTok sizes that are not official).

  Raises:
    HubError (a ValueError): unknown repo, revision or file, no network and not in the HF
      cache (naming HF_HUB_OFFLINE), no known format, another family than `family`, a fact
      no file holds (naming the option that gives it).
  """
  ref = parse(name)
  if family is not None:
    get_family(family)  # Raises with the registered names.
  key_options = dict(options)
  if ref.revision and _SHA.match(ref.revision):  # A commit: the cache needs no request.
    hit = _cached(converted_dir(ref, ref.revision, key_options))
    if hit is not None:
      return _checked(hit, family, ref)
  snap = resolve(ref)
  out = converted_dir(ref, snap.sha, key_options)
  hit = _cached(out)
  if hit is not None:
    return _checked(hit, family, ref)
  if ref.filename is not None and not snap.has(ref.filename):
    raise missing_file(snap, ref.filename)
  release = find_release(ref.repo, ref.filename)
  p = formats.plan(snap, release, family, options)
  if p.format == "jaxtok":
    if options:
      raise HubError(f"options: {snap.ref} is a jaxtok checkpoint, which loads as it is; got "
                     f"converter options {sorted(options)}")
    weights = snap.path(ckpt_format.WEIGHTS_FILE)
    snap.path(ckpt_format.CONFIG_FILE)
    return _checked(load_dir(weights.parent), family, ref)
  _convert(snap, p, out)
  return _checked(load_dir(out), family, ref)


def _checked(loaded: tuple[Family, Any], family: str | None, ref: HubRef) -> tuple[Family, Any]:
  fam = loaded[0]
  if family is not None and fam.name != family and not (
      family == "titok" and fam.name == "one_d_piece"):
    raise HubError(f"family: {ref} holds a {fam.name} model, not {family}; drop family= or "
                   f"name a {family} release")
  return loaded


def _convert(snap: Snapshot, p: formats.Plan, out: Path) -> Path:
  """Downloads the plan's files and converts them into `out` (written atomically)."""
  weights = snap.path(p.weights)
  converter = formats.CONVERTER[p.format]
  p.options = {k: _hub_file(v, k) for k, v in p.options.items()}
  options = dict(p.options)
  if p.format == "diffusers":
    snap.path("config.json")
    return convert_official(converter, weights.parent, out, **options)
  if p.format == "flextok":
    formats.flextok_scaling_factor(snap, p, weights)
    options = dict(p.options)
  if p.config is not None:
    options["config"] = p.config
  return convert_official(converter, weights, out, **options)


def _hub_file(value: Any, option: str) -> Any:
  """An option naming a hub file (`maskgit_vqgan="hf:fun-research/TiTok/maskgit-vqgan-
  imagenet-f16-256.bin"`) -> its local path; other values unchanged."""
  if not is_hub_name(value):
    return value
  ref = parse(value)
  if ref.filename is None:
    raise HubError(f"{option}: expected 'hf:ORG/NAME[@REVISION]/FILE' (one file), got {value!r}")
  return resolve(ref).path(ref.filename)


def zoo() -> list[Release]:
  """The registered releases, in the README's order."""
  return list(RELEASES.values())


def zoo_markdown() -> str:
  """The README's model-zoo table (tests/test_hub.py checks the README holds it)."""
  rows = ["| `jaxtok.load(...)` | family | model | tokens | image | rFID | licence |",
          "|---|---|---|---|---|---|---|"]
  for r in zoo():
    rfid = "–" if r.rfid is None else f"{r.rfid:.2f}"
    rows.append(f"| `\"hf:{r.id}\"` | {r.family} | {r.name} ([{r.paper}]"
                f"(https://arxiv.org/abs/{r.paper})) | {r.tokens} | {r.image_size} | {rfid} | "
                f"{r.licence} |")
  return "\n".join(rows) + "\n"


__all__ = ["CACHE_VERSION", "PREFIX", "RELEASES", "HubError", "HubRef", "Release",
           "converted_dir", "hf_cache_dir", "is_hub_name", "jaxtok_cache_dir", "load",
           "offline", "parse", "zoo", "zoo_markdown"]
