"""The trainer end to end: CLI, kill -9 + restart (bit-exact) and SIGTERM for every family's
smoke config (TiTok, FlexTok, FQGAN), NaN stop, export."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import jaxtok
from jaxtok.trainers import step as step_lib
from jaxtok.trainers import train
from tests.trainers.common import CLI_SPECS, small_config

REPO = Path(__file__).resolve().parents[2]
STEPS = 30
FLAGS = [f"--config.total_steps={STEPS}", "--config.checkpoint_every=5",
         "--config.log_every=1", "--config.grid_every=0", "--config.keep_checkpoints=3"]


def _env(cache: Path) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS="--xla_force_host_platform_device_count=2",
              JAX_COMPILATION_CACHE_DIR=str(cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", PYTHONPATH=str(REPO))


def _start(workdir: Path, cache: Path, family: str = "titok") -> subprocess.Popen:
  cmd = [sys.executable, "-m", "jaxtok.trainers.train",
         "--config", str(REPO / "jaxtok/configs" / CLI_SPECS[family]),
         "--workdir", str(workdir), *FLAGS]
  return subprocess.Popen(cmd, env=_env(cache), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> str:
  """The output of a run that must exit 0 within `timeout` seconds."""
  try:
    out = proc.communicate(timeout=timeout)[0]
  except subprocess.TimeoutExpired:
    proc.kill()
    raise
  assert proc.returncode == 0, out[-4000:]
  return out


def _last_logged_step(workdir: Path) -> int:
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return -1
  steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
  return max(steps, default=-1)


def _wait_for_step(proc, workdir: Path, step: int, timeout: float = 400) -> None:
  t0 = time.time()
  while _last_logged_step(workdir) < step:
    assert proc.poll() is None, f"trainer exited early:\n{proc.communicate()[0][-3000:]}"
    assert time.time() - t0 < timeout, "trainer too slow"
    time.sleep(0.02)


def _final_state(workdir: Path, step: int = STEPS) -> dict:
  restored = ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(restored)}


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
  """An uninterrupted CLI run of the family's smoke config (`request.param`, `CLI_SPECS`):
  the reference for restarts. Returns (family, root, cache, output)."""
  family = request.param
  root = tmp_path_factory.mktemp(f"train_{family}")
  cache = root / "xla_cache"
  out = _finish(_start(root / "ref", cache, family), TIMEOUT_S.get(family, 400))
  return family, root, cache, out


# FQGAN's smoke run (conv model + Inception teacher) takes minutes on 2 cores and FlexTok's
# about 75 s: slow set, FQGAN with a longer limit per run.
FAMILY_RUNS = ["titok", pytest.param("flextok", marks=pytest.mark.slow),
               pytest.param("fqgan", marks=pytest.mark.slow)]
TIMEOUT_S = {"fqgan": 1200}


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
@pytest.mark.parametrize("reference", ["titok"], indirect=True)
def test_cli_run_reports_psnr_grid_and_exports(reference):
  _, root, _, out = reference
  workdir = root / "ref"
  summary = json.loads((workdir / "summary.json").read_text())
  # The closing table: one row per figure, with the run's own numbers.
  assert f"{summary['psnr_before']:.2f} dB before -> {summary['psnr_after']:.2f} dB after" in out
  assert f"tokens per image  {summary['tokens_per_image']} (" in out, out[-2000:]
  assert "images/s" in out and str(workdir / "recon_grid.png") in out
  assert (workdir / "recon_grid.png").exists()
  assert summary["train_seconds"] > 0 and summary["images_per_sec"] > 0
  assert summary["status"] == "done" and summary["step"] == STEPS
  assert summary["psnr_after"] > summary["psnr_before"]  # 30 steps already help.
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert any("codebook/perplexity" in r for r in rows)
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir()
                if p.name.isdigit()) == [20, 25, 30]  # keep-N = 3
  tok = jaxtok.load(workdir / "export")
  images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
  tokens = tok.encode(images)
  assert tokens.shape == (2, tok.num_tokens) and tokens.dtype == np.int32
  recon = tok.decode(tokens)
  assert recon.shape == (2, 32, 32, 3)


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
@pytest.mark.parametrize("reference", FAMILY_RUNS, indirect=True)
def test_kill9_then_sigterm_then_finish_is_bit_exact(reference):
  """kill -9 mid-run, restart; SIGTERM mid-run (clean save), restart: same final state."""
  family, root, cache, _ = reference
  timeout = TIMEOUT_S.get(family, 400)
  workdir = root / "interrupted"
  proc = _start(workdir, cache, family)
  _wait_for_step(proc, workdir, 8, timeout)
  t0 = time.time()  # Saves are async: wait until checkpoint 5 is complete (renamed).
  while not (workdir / "checkpoints" / "5").is_dir():
    assert time.time() - t0 < timeout and proc.poll() is None, "checkpoint 5 never completed"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert _last_logged_step(workdir) < STEPS  # Killed mid-run.

  proc = _start(workdir, cache, family)  # Resumes from the newest checkpoint (>= 5).
  _wait_for_step(proc, workdir, max(14, _last_logged_step(workdir) + 3), timeout)
  proc.send_signal(signal.SIGTERM)
  out = _finish(proc, timeout)  # Exit code 0: a clean stop.
  assert "resumed from" in out and "/checkpoints/" in out, out[-2000:]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["status"] == "preempted"
  stopped = summary["step"]
  assert 5 < stopped < STEPS
  assert (workdir / "checkpoints" / str(stopped) / "state").is_dir()

  out = _finish(_start(workdir, cache, family), timeout)
  assert f"checkpoints/{stopped}" in out, out[-2000:]
  ref, got = _final_state(root / "ref"), _final_state(workdir)
  assert ref.keys() == got.keys()
  for k in ref:
    np.testing.assert_array_equal(got[k], ref[k], err_msg=k)


def test_nan_loss_stops_after_last_good_checkpoint(tmp_path, monkeypatch):
  original = step_lib.forward_losses

  def poisoned(parts, params, model_state, images, key, step, frozen, disc=None):
    total, (terms, recon, aux, ms) = original(parts, params, model_state, images, key, step,
                                              frozen, disc)
    bad = jnp.where(step >= 3, jnp.nan, 0.0)  # The 4th step's loss becomes NaN.
    terms = dict(terms, reconstruction_loss=terms["reconstruction_loss"] + bad)
    return total + bad, (terms, recon, aux, ms)

  monkeypatch.setattr(step_lib, "forward_losses", poisoned)
  config = small_config(total_steps=8, checkpoint_every=2, export=False)
  with pytest.raises(train.NonFiniteLossError,
                     match=r"step 4: .*reconstruction_loss=nan.*checkpoints/2"):
    train.train_and_evaluate(config, tmp_path)
  steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [2]
  state = _final_state(tmp_path, 2)
  assert all(np.all(np.isfinite(v)) for v in state.values() if v.dtype.kind == "f")


def _corrupt_step(workdir: Path, step: int) -> None:
  for p in (workdir / "checkpoints" / str(step) / "state").rglob("*"):
    if p.is_file():
      p.write_bytes(b"garbage")


@pytest.mark.slow  # Three short in-process runs (~1 min on 2 loaded cores).
def test_resume_past_corrupt_checkpoints_saves_the_redone_steps(tmp_path):
  """Issue 24 item 2: after a fallback the redone step was never saved again (Orbax skipped
  the existing directory, `save`'s False was ignored): 'done at step 3' with step 3 corrupt;
  with every step corrupt, no checkpoint was written at all."""
  config = small_config(total_steps=3, checkpoint_every=1, export=False)
  train.train_and_evaluate(config, tmp_path)
  ckpts = tmp_path / "checkpoints"
  _corrupt_step(tmp_path, 3)
  with pytest.warns(RuntimeWarning, match=r"step 3 .* could not be restored"):
    summary = train.train_and_evaluate(config, tmp_path)
  assert (summary["status"], summary["step"]) == ("done", 3)
  assert "checkpoints/2" in summary["origin"]
  assert _final_state(tmp_path, 3)  # Loadable again.
  assert (ckpts / "unloadable" / "3").is_dir()
  for step in (1, 2, 3):
    _corrupt_step(tmp_path, step)
  with pytest.warns(RuntimeWarning, match=r"could not be restored"):
    summary = train.train_and_evaluate(config, tmp_path)
  assert (summary["status"], summary["step"]) == ("done", 3)
  assert sorted(int(p.name) for p in ckpts.iterdir() if p.name.isdigit()) == [1, 2, 3]
  assert all(_final_state(tmp_path, s) for s in (1, 2, 3))
