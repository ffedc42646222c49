"""FQGAN through the shared trainer: fqgan.py:smoke trains from the CLI (with the semantic
alignment term on the Inception stand-in teacher), resumes, exports and loads with jaxtok.load
(slow: two short CLI runs of a conv model). The semantic term's unit tests:
tests/trainers/test_semantic.py."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import jaxtok
from jaxtok.configs import fqgan as fqgan_configs
from jaxtok.trainers import feedback, train
from tests.fixture_files import REPO


def test_configs():
  c = fqgan_configs.get_config("variant=triple-16")
  assert c.family == "fqgan" and c.model.branches == ("vis", "sem_mid", "sem_high")
  assert (c.optim.lr, c.optim.b1, c.optim.b2, c.optim.grad_clip) == (2e-4, 0.9, 0.95, 1.0)
  assert (c.loss.gan_weight, c.loss.gan_start_step, c.batch_size) == (0.5, 20_000, 256)
  assert c.dtype == "bfloat16"
  # 0.5 semantic alignment per released teacher (one per semantic branch).
  assert c.loss.semantic_weight == 0.5
  assert c.loss.semantic_teachers(("sem_mid", "sem_high")) == c.model.teachers()
  t = fqgan_configs.get_config("tiny")
  assert t.model == jaxtok.tokenizers.get_family("fqgan").variant("tiny")
  s = fqgan_configs.get_config("smoke")
  assert s.total_steps == 1 and s.model.image_size == 32
  assert s.loss.semantic_weight == 0.5 and s.loss.semantic_teacher.startswith("inception:mixed_2")
  # Per-branch codebook statistics: tiny evaluates with every grid, the official runs add rFID.
  assert "codebook" in t.evaluators and t.eval_every == t.grid_every > 0
  assert {"codebook", "fid"} <= set(c.evaluators) and s.evaluators == ()


def test_single_codebook_config_has_tiny_bits():
  """`tiny,single`: one branch of 512^2 codes = Dual tiny's 2 x 9 bits per position, no
  semantic term, the rest of the run unchanged."""
  t, v = fqgan_configs.get_config("tiny"), fqgan_configs.get_config("tiny,single")
  m = v.model
  assert m.branches == ("vis",) and m.feature_heads == {} and m.codebook_size == 512 ** 2
  bits = lambda c: c.num_branches * np.log2(c.codebook_size)
  assert bits(m) == bits(t.model) == 18
  assert (m.ch, m.encoder_ch_mult, m.z_channels, m.codebook_dim, m.adapter_layers) == (
      t.model.ch, t.model.encoder_ch_mult, t.model.z_channels, t.model.codebook_dim,
      t.model.adapter_layers)
  assert v.loss.semantic_weight == 0 and v.name == "fqgan_tiny_single"
  assert (v.total_steps, v.optim, v.data, v.evaluators) == (
      t.total_steps, t.optim, t.data, t.evaluators)
  assert fqgan_configs.get_config("smoke,single").model.codebook_size == 64 ** 2
  with pytest.raises(ValueError, match="config: the same-bits single codebook"):
    fqgan_configs.get_config("variant=dual-16,single")


@pytest.mark.slow  # ~57 s loaded; the slow set (CI) runs it.
@pytest.mark.parametrize("arg", ["tiny", "tiny,single"])
def test_tiny_run_evaluators_report_codebook_usage(arg):
  """The trainer's evaluation of the tiny configs (`train.run_evaluators`, at every grid and
  at the end) reports codebook usage per FQGAN branch, or of the single codebook, and the
  closing summary table prints it. Smoke-sized model (same structure), no teacher: seconds."""
  config = fqgan_configs.get_config(arg)
  config.model = fqgan_configs.get_config("smoke,single" if "single" in arg else "smoke").model
  config.loss.semantic_weight, config.fast_compile = 0.0, True
  exp = train.Experiment(config)
  results = train.run_evaluators(exp, exp.init_state())
  n = 4 * config.model.grid_size ** 2  # The 4 bundled held-out photos.
  assert results["eval/codebook/num_tokens"] == n * config.model.num_branches
  assert 0 < results["eval/recon/psnr"] < 60
  branches = config.model.branches if len(config.model.branches) > 1 else ()
  for b in branches:
    usage = results[f"eval/codebook/factor/{b}/usage"]
    assert 0 < usage <= n / config.model.codebook_size
    assert results[f"eval/codebook/factor/{b}/dead_codes"] == round(
        (1 - usage) * config.model.codebook_size)
    assert 1 <= results[f"eval/codebook/factor/{b}/perplexity"] <= n
  if not branches:
    assert not any("/factor/" in k for k in results)
    assert 0 < results["eval/codebook/usage"] <= n / config.model.codebook_size
  table = feedback.summary_table({"status": "done", "step": 1, "origin": "test",
                                  "evaluators": results})
  labels = [f"codebook usage ({b})" for b in branches] or ["codebook usage "]
  for label in labels:
    assert label in table and "perplexity" in table, table


def _run(workdir, steps, cache):
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
             XLA_FLAGS="--xla_force_host_platform_device_count=1",
             JAX_COMPILATION_CACHE_DIR=str(cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  cmd = [sys.executable, "-m", "jaxtok.trainers.train", "--config",
         str(REPO / "jaxtok/configs/fqgan.py") + ":smoke", "--workdir", str(workdir),
         f"--config.total_steps={steps}", "--config.grid_every=0"]
  out = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
  return out.stdout + out.stderr


@pytest.mark.slow
def test_smoke_trains_resumes_exports(tmp_path):
  work, cache = tmp_path / "run", tmp_path / "cache"
  _run(work, 1, cache)
  log = _run(work, 2, cache)
  assert "resumed from" in log and "at step 1" in log, log[-2000:]
  rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in rows) >= 1
  # The semantic term (Inception stand-in teacher) is part of the trained objective.
  train = [r for r in rows if "loss/total_loss" in r]
  assert train and all(np.isfinite(r["loss/semantic_loss"]) and r["loss/semantic_loss"] > 0
                       for r in train)
  assert train[0]["loss/semantic_loss"] == pytest.approx(0.5 * train[0]["loss/semantic_loss_sem"])
  tok = jaxtok.load(work / "export")
  assert tok.family == "fqgan"
  img = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
  ids = tok.encode(img)
  assert ids.shape == (2, 16, 2)
  assert tok.decode(ids).shape == (2, 32, 32, 3)
