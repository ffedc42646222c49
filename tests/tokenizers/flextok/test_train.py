"""FlexTok through the one trainer: the smoke config trains with the rectified-flow loss."""
import importlib.util
import subprocess
import sys

import jax
import numpy as np
import pytest

import jaxtok
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.train import Experiment, model_class_and_config
from tests.fixture_files import REPO

CONFIG = REPO / "jaxtok" / "configs" / "flextok.py"


def get_config(arg):
  spec = importlib.util.spec_from_file_location("flextok_cfg", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def test_configs_resolve():
  for arg in ("tiny", "variant=d12-d12", "variant=d18-d28"):
    config = get_config(arg)
    cls, model_config = model_class_and_config(config)
    assert config.family == "flextok" and model_config.num_registers in (64, 256)
    assert config.loss.reconstruction_weight == 0 and config.loss.gan_weight == 0


def test_smoke_trains_steps_with_the_flow_loss():
  config = get_config("smoke")
  config.total_steps = 3
  exp = Experiment(config, jax.devices()[:2])
  state = exp.init_state()
  before = jax.device_get(state.params)
  rng = np.random.default_rng(0)
  size = exp.data_config.resolution
  losses = []
  for _ in range(3):
    batch = {"image": rng.integers(0, 256, (config.batch_size, size, size, 3)).astype(np.uint8)}
    state, metrics = exp.step(state, exp.global_batch(batch))
    metrics = jax.device_get(metrics)
    losses.append(float(metrics["loss/flow_loss"]))
    assert np.isclose(metrics["loss/total_loss"], metrics["loss/flow_loss"], rtol=1e-6)
  assert all(np.isfinite(losses)) and int(state.step) == 3
  after = jax.device_get(state.params)
  moved = [state_lib.path_str(p) for (p, a), b in zip(
      jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before))
      if not np.array_equal(a, b)]
  # Zero-init heads move on step 1; through them the encoder moves too by step 3.
  assert any(p.startswith("decoder/head_proj") for p in moved)
  assert any(p.startswith("encoder/") for p in moved), moved
  recon = exp.reconstruct(state, batch["image"][:2])
  assert recon.shape == (2, size, size, 3) and recon.min() >= 0 and recon.max() <= 1
  tok = jaxtok.Tokenizer(exp.export_model(state), family="flextok")
  assert tok.encode(batch["image"][:2]).shape == (2, config.model.num_registers)


@pytest.mark.slow
def test_cli_smoke_run(tmp_path):
  out = subprocess.run([sys.executable, "-m", "jaxtok.trainers.train", "--config",
                        f"{CONFIG}:smoke", "--workdir", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert (tmp_path / "metrics.jsonl").exists()
