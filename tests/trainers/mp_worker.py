"""One process of the 2-process x 2-device trainer test (spawned by test_multiprocess.py).

Usage: python mp_worker.py OUT.npz   (with JAXTOK_COORDINATOR / JAXTOK_NUM_PROCESSES /
JAXTOK_PROCESS_ID set, and 2 CPU devices per process through XLA_FLAGS).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from jaxtok.parallel import distributed

distributed.initialize()  # Before anything touches the JAX backend.

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxtok.trainers.train import Experiment  # noqa: E402
from tests.trainers.common import fixed_batches, small_config  # noqa: E402

STEPS = 3


def main(out: str) -> None:
  assert jax.process_count() == 2 and jax.device_count() == 4, (
      jax.process_count(), jax.device_count())
  exp = Experiment(small_config())
  state = exp.init_state()
  pid = jax.process_index()
  losses = []
  for batch in fixed_batches(STEPS):
    # Each process feeds only its half of the global batch (host-local data).
    half = exp.local_batch
    local = {"image": batch["image"][pid * half:(pid + 1) * half]}
    state, metrics = exp.step(state, exp.global_batch(local))
    losses.append(float(metrics["loss/total_loss"]))
  params = jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), state.params)
  flat = {jax.tree_util.keystr(p): v for p, v in
          jax.tree_util.tree_leaves_with_path(params)}
  if pid == 0:
    np.savez(out, losses=np.asarray(losses), **flat)
  print(f"process {pid} done: losses {losses}", flush=True)


if __name__ == "__main__":
  main(sys.argv[1])
