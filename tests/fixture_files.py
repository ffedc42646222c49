"""Discovery of parity fixture files (docs/design.md §8), for the tests only (it imports pytest).

Fixture files are `.npz` archives that carry a 0-d string `fixture_kind`. Tests parametrize
over every file of a kind found under `tests/fixtures/` and in every directory listed in the
environment variable `JAXTOK_EXTRA_FIXTURES` (os.pathsep-separated), with the file's stem as
the test id. Tests import it as `from tests.fixture_files import fixture_params`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ENV_VAR = "JAXTOK_EXTRA_FIXTURES"
TESTS = Path(__file__).resolve().parent
FIXTURES = TESTS / "fixtures"  # tests/fixtures/: the fixtures that ship with the repo.
REPO = TESTS.parent


def fixture_dirs(default_root: str | os.PathLike | None = None) -> list[Path]:
  """Directories searched for fixtures: the default root, then $JAXTOK_EXTRA_FIXTURES."""
  dirs = []
  if default_root is not None:
    dirs.append(Path(default_root))
  for entry in os.environ.get(ENV_VAR, "").split(os.pathsep):
    if entry.strip():
      path = Path(entry.strip())
      if not path.is_dir():
        raise ValueError(f"{ENV_VAR} names {str(path)!r}, which is not a directory")
      dirs.append(path)
  return dirs


def read_kind(path: str | os.PathLike) -> str | None:
  """The `fixture_kind` of an `.npz` file, or None if it has none."""
  with np.load(path, allow_pickle=False) as f:
    if "fixture_kind" not in f.files:
      return None
    return str(f["fixture_kind"])


def find_fixtures(kinds: str | tuple[str, ...],
                  default_root: str | os.PathLike | None = None) -> list[Path]:
  """All `.npz` files (recursively) whose `fixture_kind` is one of `kinds`.

  Files with the same stem in several directories are all returned; the first directory
  wins ties only in ordering. Returns sorted, de-duplicated resolved paths.
  """
  if isinstance(kinds, str):
    kinds = (kinds,)
  found: dict[Path, None] = {}
  for d in fixture_dirs(default_root):
    for path in sorted(d.rglob("*.npz")):
      if read_kind(path) in kinds:
        found[path.resolve()] = None
  return list(found)


def fixture_params(kinds: str | tuple[str, ...], default_root) -> list:
  """`pytest.param(path, id=stem)` for every fixture of `kinds`; for parametrize."""
  return [pytest.param(p, id=p.stem) for p in find_fixtures(kinds, default_root)]
