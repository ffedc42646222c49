"""Orbax checkpoints of a training run: state + data-iterator state + config JSON.

Layout of `<workdir>/checkpoints/<step>/`: `state/` (the `TrainState` pytree, sharded
arrays), `data/` (one grain iterator-state file per process), `config/` (the run's
config JSON). Saves are asynchronous (training continues while arrays are written) and
atomic (Orbax writes to a temporary directory and renames it when complete), so a run
killed mid-save leaves only complete checkpoints behind. `restore_latest` walks from the
newest step backwards and skips a checkpoint that fails to load, with a warning; when the
run later saves one of those steps again, the unloadable directory is first moved aside to
`<checkpoints>/unloadable/<step>[.<n>]` (one rename: kept for inspection, never deleted) so
the redone step is written in its place. A save that does not happen raises.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp

try:  # grain's per-process iterator-state handler.
  import grain.checkpoint as grain_ckpt
except ImportError:  # pragma: no cover - grain is a hard dependency of jaxtok.
  grain_ckpt = None

CHECKPOINT_SUBDIR = "checkpoints"
UNLOADABLE_SUBDIR = "unloadable"


class CheckpointSaveError(RuntimeError):
  """A requested checkpoint was not written (it would silently be lost otherwise)."""


def _iterator_checkpointable(it: Any) -> bool:
  return it is not None and hasattr(it, "get_state") and hasattr(it, "set_state")


class Checkpointer:
  """Periodic, keep-N, async checkpoints of one run directory.

  Args:
    directory: the checkpoints directory (usually `<workdir>/checkpoints`).
    keep: how many most-recent checkpoints to keep (keep-N).
    async_save: write arrays in a background thread.
    read_only: open someone else's checkpoints (for `config.resume`).
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = Path(directory).absolute()
    self.read_only = read_only
    self.unloadable: set[int] = set()  # Steps restore_latest found unusable.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  # ---------------------------------------------------------------- save
  def save(self, step: int, state: Any, *, data_iterator: Any = None,
           config_json: str | None = None, force: bool = False) -> bool:
    """Starts saving `state` (and the iterator position, config) as `step`.

    A step that already exists is only replaced when `restore_latest` found it unloadable
    (the run fell back past it and redid it): that directory is moved aside first.

    Returns:
      True (a save was started). Call `wait()` before relying on it being on disk.

    Raises:
      CheckpointSaveError: `step` exists and loads (it would not be replaced), or Orbax
        declined the save.
    """
    step = int(step)
    if step in self.manager.all_steps() and step not in self.unloadable:
      raise CheckpointSaveError(
          f"checkpoint step {step} already exists in {self.directory} and is not known to "
          f"be unloadable; refusing to overwrite it")
    # Unloadable steps at or after this one would block it (Orbax saves only new, newer steps).
    blocking = sorted(s for s in self.unloadable if s >= step)
    if blocking:
      self.wait()
      for s in blocking:
        self._move_aside(s)
      self.manager.reload()
    items = {"state": ocp.args.StandardSave(state)}
    if _iterator_checkpointable(data_iterator) and grain_ckpt is not None:
      items["data"] = grain_ckpt.CheckpointSave(data_iterator)
    if config_json is not None:
      items["config"] = ocp.args.JsonSave(json.loads(config_json))
    if not self.manager.save(step, args=ocp.args.Composite(**items), force=force):
      raise CheckpointSaveError(
          f"checkpoint step {step} was not saved in {self.directory} (Orbax declined it; "
          f"existing steps {self.all_steps()})")
    return True

  def _move_aside(self, step: int) -> None:
    """Renames the unloadable `step` directory under `unloadable/` (primary process only)."""
    if jax.process_index() == 0 and (self.directory / str(step)).is_dir():
      aside = self.directory / UNLOADABLE_SUBDIR
      aside.mkdir(exist_ok=True)
      target, n = aside / str(step), 0
      while target.exists():
        n += 1
        target = aside / f"{step}.{n}"
      shutil.move(str(self.directory / str(step)), str(target))
      msg = (f"checkpoint step {step} in {self.directory} was unloadable: moved to {target} "
             f"so the run can save it again")
      warnings.warn(msg, RuntimeWarning, stacklevel=3)
      logging.warning(msg)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # noqa: PLC0415
      multihost_utils.sync_global_devices(f"jaxtok_checkpoint_move_aside_{step}")
    self.unloadable.discard(step)

  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self.manager.wait_until_finished()

  def reached_preemption(self, step: int) -> bool:
    """True when the cluster signalled preemption (multi-host sync point of Orbax)."""
    try:
      return bool(self.manager.reached_preemption(int(step)))
    except Exception:  # No preemption service on this platform.
      return False

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()

  # ---------------------------------------------------------------- restore
  def all_steps(self) -> list[int]:
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def restore(self, step: int, abstract_state: Any, *, data_iterator: Any = None) -> Any:
    """Restores `step` into the structure/shardings of `abstract_state`.

    `abstract_state` is a pytree of `jax.ShapeDtypeStruct` with `.sharding` set (from
    `jax.eval_shape` + the trainer's shardings). The iterator, if given and saved, is
    repositioned in place.
    """
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    saved = self._saved_items(step)
    if _iterator_checkpointable(data_iterator) and "data" in saved and grain_ckpt is not None:
      items["data"] = grain_ckpt.CheckpointRestore(data_iterator)
    restored = self.manager.restore(int(step), args=ocp.args.Composite(**items))
    return restored["state"]

  def _saved_items(self, step: int) -> set[str]:
    step_dir = self.directory / str(step)
    if not step_dir.is_dir():
      return set()
    return {p.name for p in step_dir.iterdir() if p.is_dir()}

  def restore_latest(self, abstract_state: Any, *, data_iterator: Any = None
                     ) -> tuple[int, Any] | None:
    """Restores the newest checkpoint that loads; older ones are tried if it is corrupt.

    Returns:
      (step, state), or None if there is no loadable checkpoint.
    """
    for step in reversed(self.all_steps()):
      try:
        state = self.restore(step, abstract_state, data_iterator=data_iterator)
      except Exception as e:  # Any failure means "this one is unusable".
        msg = (f"checkpoint step {step} in {self.directory} could not be restored "
               f"({type(e).__name__}: {str(e)[:300]}); falling back to the previous one")
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        logging.warning(msg)
        self.unloadable.add(int(step))
        continue
      return step, state
    return None


def find_checkpoint_dir(path: str | os.PathLike) -> tuple[Path, int | None]:
  """Resolves `config.resume`: a workdir, its checkpoints dir, or one step dir.

  Returns:
    (checkpoints directory, explicit step or None for "newest").

  Raises:
    ValueError: when `path` holds no checkpoints.
  """
  path = Path(path)
  candidates = [(path / CHECKPOINT_SUBDIR, None), (path, None)]
  if path.name.isdigit():
    candidates.append((path.parent, int(path.name)))
  for directory, step in candidates:
    if (directory.is_dir() and any(p.name.isdigit() and p.is_dir()
                                   for p in directory.iterdir())
        and (step is None or (directory / str(step)).is_dir())):
      return directory, step
  raise ValueError(f"resume: expected a workdir or checkpoint directory with step "
                   f"subdirectories, got {str(path)!r}")


def abstract_with_shardings(tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the target shardings (what Orbax restores into)."""
  return jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
