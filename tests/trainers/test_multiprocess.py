"""Two processes x 2 CPU devices (gloo collectives over loopback) == one 4-device process."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxtok.trainers.train import Experiment
from tests.processes import free_port, wait_all
from tests.trainers.common import fixed_batches, small_config

WORKER = Path(__file__).with_name("mp_worker.py")
STEPS = 3


@pytest.mark.slow  # ~50 s: two JAX processes over gloo.
def test_two_processes_match_one_process(tmp_path):
  port = free_port()
  out = tmp_path / "mp.npz"
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAXTOK_COORDINATOR=f"127.0.0.1:{port}", JAXTOK_NUM_PROCESSES="2",
               JAXTOK_PROCESS_ID=str(pid), JAX_DEFAULT_MATMUL_PRECISION="highest")
    procs.append(subprocess.Popen([sys.executable, str(WORKER), str(out)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = wait_all(procs, timeout=400)
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  assert "process 1 done" in logs[1]

  # The same global batches through one process with a 4-device sub-mesh.
  exp = Experiment(small_config(), jax.devices()[:4])
  state = exp.init_state()
  losses = []
  for b in fixed_batches(STEPS):
    state, m = exp.step(state, exp.global_batch(b))
    losses.append(float(m["loss/total_loss"]))
  params = jax.device_get(state.params)
  with np.load(out) as mp:
    np.testing.assert_allclose(mp["losses"], losses, rtol=2e-5)
    leaves = jax.tree_util.tree_leaves_with_path(params)
    assert len(leaves) == len(mp.files) - 1
    for path, ref in leaves:
      np.testing.assert_allclose(mp[jax.tree_util.keystr(path)], ref, rtol=1e-4, atol=2e-5)
