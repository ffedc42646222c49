"""`hf:ORG/NAME[@REVISION][/FILE]` names, and their files from the hub or the HF cache.

Downloads go through `huggingface_hub` (its cache, its token: `HF_TOKEN`). The environment is
read at call time, not at import: `HF_HUB_OFFLINE=1` (cache only, no request is made),
`HF_HUB_CACHE` / `HF_HOME` (where the HF cache is), `HF_ENDPOINT`. Every failure is a
`HubError` (a ValueError) that names the repo, the file or the revision and what to do.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

PREFIX = "hf:"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA = re.compile(r"^[0-9a-f]{40}$")


class HubError(ValueError):
  """A `hf:` name that cannot be loaded (unknown repo, missing file, no network, ...)."""


@dataclasses.dataclass(frozen=True)
class HubRef:
  """A parsed `hf:` name.

  Attributes:
    repo: "ORG/NAME".
    revision: branch, tag or commit sha (None: "main").
    filename: a file of the repo ("fqgan_dual_ds16.pt"), or None for the whole release.
  """
  repo: str
  revision: str | None = None
  filename: str | None = None

  def __str__(self) -> str:
    rev = f"@{self.revision}" if self.revision else ""
    file = f"/{self.filename}" if self.filename else ""
    return f"{PREFIX}{self.repo}{rev}{file}"


def parse(name: str) -> HubRef:
  """`"hf:ORG/NAME[@REVISION][/FILE]"` -> HubRef (REVISION holds no "/"; FILE may)."""
  if not isinstance(name, str) or not name.startswith(PREFIX):
    raise HubError(f"path_or_variant: expected 'hf:ORG/NAME[@REVISION][/FILE]', got {name!r}")
  parts = name[len(PREFIX):].split("/")
  if len(parts) < 2:
    raise HubError(f"path_or_variant: expected 'hf:ORG/NAME[@REVISION][/FILE]', got {name!r} "
                   f"(no '/' between ORG and NAME)")
  org, repo_name, file_parts = parts[0], parts[1], parts[2:]
  revision = None
  if "@" in repo_name:
    repo_name, revision = repo_name.split("@", 1)
    if not revision:
      raise HubError(f"path_or_variant: {name!r} has an empty revision after '@'")
  for what, part in (("ORG", org), ("NAME", repo_name)):
    if not _PART.match(part):
      raise HubError(f"path_or_variant: {what} of {name!r} is {part!r}; expected letters, "
                     f"digits, '.', '_' or '-'")
  filename = "/".join(file_parts) or None
  if filename is not None and (any(p in ("", ".", "..") for p in file_parts)):
    raise HubError(f"path_or_variant: FILE of {name!r} is {filename!r}; expected a path "
                   f"inside the repo")
  return HubRef(f"{org}/{repo_name}", revision, filename)


def offline() -> bool:
  """Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) is set: read now, or read by
  huggingface_hub when it was imported (it then refuses every request)."""
  value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
  if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
    return True
  from huggingface_hub import constants  # noqa: PLC0415  (heavy: only when a hf: name loads)
  return bool(constants.HF_HUB_OFFLINE)


def hf_cache_dir() -> Path:
  """The HF hub cache: `HF_HUB_CACHE`, else `HF_HOME/hub`, else huggingface_hub's default."""
  if os.environ.get("HF_HUB_CACHE"):
    return Path(os.environ["HF_HUB_CACHE"]).expanduser()
  if os.environ.get("HF_HOME"):
    return Path(os.environ["HF_HOME"]).expanduser() / "hub"
  from huggingface_hub import constants  # noqa: PLC0415  (heavy: only when a hf: name loads)
  return Path(constants.HF_HUB_CACHE)


def jaxtok_cache_dir() -> Path:
  """Where converted checkpoints are kept: `JAXTOK_CACHE`, else `XDG_CACHE_HOME/jaxtok`,
  else `~/.cache/jaxtok`."""
  if os.environ.get("JAXTOK_CACHE"):
    return Path(os.environ["JAXTOK_CACHE"]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
  return Path(base).expanduser() / "jaxtok"


def _endpoint() -> str | None:
  return os.environ.get("HF_ENDPOINT") or None


def _storage(repo: str) -> Path:
  return hf_cache_dir() / ("models--" + repo.replace("/", "--"))


def _cached_sha(ref: HubRef) -> str | None:
  """The commit the HF cache holds for `ref`'s revision (None: none)."""
  rev = ref.revision or "main"
  if _SHA.match(rev):
    return rev if (_storage(ref.repo) / "snapshots" / rev).is_dir() else None
  ref_file = _storage(ref.repo) / "refs" / rev
  if not ref_file.is_file():
    return None
  sha = ref_file.read_text().strip()
  return sha if (_storage(ref.repo) / "snapshots" / sha).is_dir() else None


def _cached_files(sha: str, repo: str) -> frozenset[str]:
  root = _storage(repo) / "snapshots" / sha
  return frozenset(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() or (p.is_symlink() and p.exists()))


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """One resolved revision of a repo.

  Attributes:
    ref: the name it was resolved from.
    sha: the commit (the cache key of everything converted from it).
    files: the repo's files (offline: the ones in the HF cache).
    offline: whether files come from the HF cache only.
  """
  ref: HubRef
  sha: str
  files: frozenset[str]
  offline: bool

  def has(self, filename: str) -> bool:
    return filename in self.files

  def path(self, filename: str) -> Path:
    """The local path of `filename` (downloaded into the HF cache when online)."""
    if filename not in self.files:
      raise missing_file(self, filename)
    from huggingface_hub import hf_hub_download  # noqa: PLC0415  (heavy: lazy by design)
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError  # noqa: PLC0415
    # Online by the branch or tag name, so that the HF cache records it (`refs/`) for later
    # offline loads; the file must then come from the commit resolved before.
    revision = self.sha if self.offline else (self.ref.revision or "main")
    try:
      path = Path(hf_hub_download(self.ref.repo, filename, revision=revision,
                                  cache_dir=hf_cache_dir(), local_files_only=self.offline,
                                  endpoint=_endpoint()))
    except LocalEntryNotFoundError as e:
      raise HubError(f"{self.ref}: {filename} is not in the HF cache ({hf_cache_dir()}) and "
                     f"the hub could not be reached ({_reason(e)}); connect, or download it "
                     f"once, or unset HF_HUB_OFFLINE") from e
    except EntryNotFoundError as e:
      raise missing_file(self, filename) from e
    if self.sha not in path.parts:
      raise HubError(f"{self.ref}: the revision moved from commit {self.sha[:12]} while its "
                     f"files were downloaded ({filename} came from {path.parent}); load again")
    return path

  def read_json(self, filename: str) -> Any:
    path = self.path(filename)
    try:
      return json.loads(path.read_text())
    except (OSError, ValueError) as e:
      raise HubError(f"{self.ref}: {filename} is not valid JSON: {e}") from e


def missing_file(snap: Snapshot, filename: str) -> HubError:
  where = (f"in the HF cache ({hf_cache_dir()}; HF_HUB_OFFLINE is set)" if snap.offline
           else f"at revision {snap.sha[:12]}")
  shown = sorted(snap.files)
  listed = ", ".join(shown[:12]) + (f", ... ({len(shown) - 12} more)" if len(shown) > 12 else "")
  return HubError(f"{snap.ref}: no file {filename!r} {where}; the repo has: [{listed}]")


def _reason(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}"


def _from_cache(ref: HubRef, *, why: str) -> Snapshot:
  sha = _cached_sha(ref)
  if sha is None:
    raise HubError(f"{ref}: not in the HF cache ({hf_cache_dir()}) and {why}; run it once "
                   f"with network access (HF_HUB_OFFLINE unset), or point HF_HUB_CACHE at a "
                   f"cache that holds it")
  return Snapshot(ref, sha, _cached_files(sha, ref.repo), offline=True)


def resolve(ref: HubRef) -> Snapshot:
  """The commit and file list of `ref`: from the hub, or with `HF_HUB_OFFLINE` (or when the
  hub cannot be reached) from the HF cache."""
  if offline():
    return _from_cache(ref, why="HF_HUB_OFFLINE is set (no request was made)")
  from huggingface_hub import HfApi  # noqa: PLC0415  (heavy: lazy by design)
  from huggingface_hub.errors import (  # noqa: PLC0415
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
  )
  try:
    info = HfApi(endpoint=_endpoint()).model_info(ref.repo, revision=ref.revision)
  except GatedRepoError as e:
    raise HubError(f"{ref}: the repo is gated; accept its terms on the hub and set HF_TOKEN "
                   f"({_reason(e)})") from e
  except RepositoryNotFoundError as e:
    raise HubError(f"{ref}: no such model repo on the hub {_endpoint() or 'huggingface.co'} "
                   f"(or it is private: set HF_TOKEN); check ORG/NAME ({_reason(e)})") from e
  except RevisionNotFoundError as e:
    raise HubError(f"{ref}: the repo has no revision {ref.revision!r} (a branch, tag or "
                   f"commit sha) ({_reason(e)})") from e
  except HfHubHTTPError as e:
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
      raise HubError(f"{ref}: access refused (HTTP {status}); set HF_TOKEN") from e
    return _from_cache(ref, why=f"the hub answered {_reason(e)}")
  except Exception as e:  # Connection refused, DNS, timeout: the transport's own classes.
    return _from_cache(ref, why=f"the hub could not be reached ({_reason(e)}); with no "
                                f"network set HF_HUB_OFFLINE=1 to use the HF cache only")
  files = frozenset(s.rfilename for s in (info.siblings or []))
  return Snapshot(ref, info.sha, files, offline=False)


__all__ = ["PREFIX", "HubError", "HubRef", "Snapshot", "hf_cache_dir", "jaxtok_cache_dir",
           "missing_file", "offline", "parse", "resolve"]
