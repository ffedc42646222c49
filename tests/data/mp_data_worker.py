"""One process of the 2-process data test (spawned by test_shards_and_hf.py).

Usage: python mp_data_worker.py SOURCE OUT.json  (JAXTOK_COORDINATOR / JAXTOK_NUM_PROCESSES /
JAXTOK_PROCESS_ID set). Writes this host's colour ids of one epoch, read straight through and
read again as 2 images + a restart from the saved iterator state.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from jaxtok.parallel import distributed

distributed.initialize()  # Before anything touches the JAX backend.

import jax  # noqa: E402

from jaxtok import data  # noqa: E402
from tests.data.common import colour_id  # noqa: E402


def main(source: str, out: str) -> None:
  assert jax.process_count() == 2, jax.process_count()
  cfg = data.DataConfig(source=source, resolution=8, seed=5)
  n = len(data.host_records(cfg))
  read = lambda it, k: [colour_id(next(it)["image"][0]) for _ in range(k)]
  epoch = read(data.create_train_iterator(cfg, batch_size=1), n)
  first = data.create_train_iterator(cfg, batch_size=1)
  head = read(first, 2)
  again = data.create_train_iterator(cfg, batch_size=1)
  again.set_state(json.loads(json.dumps(first.get_state())))  # As a checkpoint stores it.
  with open(out, "w") as f:
    json.dump({"epoch": epoch, "resumed": head + read(again, n - 2)}, f)
  print(f"process {jax.process_index()} done", flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
