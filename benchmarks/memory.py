r"""Training-step memory from XLA's memory analysis (compile only, nothing runs); JSON.

    PYTHONPATH=. python benchmarks/memory.py                     # S-128, B-64, L-32, ~2-3 min
    PYTHONPATH=. python benchmarks/memory.py --variants S-128 --batch 8 --remat none,full

1. Peak memory of the TiTok stage-1 train step (the trainer's jitted, donated step:
   forward + backward + AdamW + EMA, frozen MaskGIT teacher) at `--batch` images per device
   on one device, for each activation-checkpointing policy of `--remat`
   (`TiTokConfig.remat`: "none", "full", "dots"). Figures per device: arguments (state +
   batch), outputs, temporaries (activations and workspace) and their sum less the donated
   aliases (`peak_estimate_bytes`).
2. FSDP on `--devices` simulated host devices (`--xla_force_host_platform_device_count`):
   per-device bytes of params + optimizer state + EMA under `mesh.fsdp = devices` against
   pure data parallelism (`fsdp = 1`), from the trainer's own state shardings, and the
   compiled step's per-device argument bytes under both.

Abstract state only (`Experiment.abstract_for_restore`), so L-32 needs no real allocation.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

DEVICES_FLAG = "--xla_force_host_platform_device_count"


def _set_devices(n: int) -> None:
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(DEVICES_FLAG)]
  os.environ["XLA_FLAGS"] = " ".join(flags + [f"{DEVICES_FLAG}={n}"])


def _args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--variants", default="S-128,B-64,L-32")
  p.add_argument("--batch", type=int, default=32, help="images per device")
  p.add_argument("--remat", default="none,full", help="comma-separated TiTokConfig.remat values")
  p.add_argument("--devices", type=int, default=8, help="simulated devices of the FSDP check")
  p.add_argument("--fsdp-variant", default="S-128")
  return p.parse_args(argv)


ARGS = _args() if __name__ == "__main__" else None
if ARGS is not None:
  _set_devices(ARGS.devices)  # Before jax is imported.

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import timing  # noqa: E402
import train_step  # noqa: E402

from jaxtok.trainers.train import Experiment  # noqa: E402

GIB = 2 ** 30


def _abstract_batch(exp: Experiment, batch: int) -> dict:
  r = exp.data_config.resolution
  return {"image": jax.ShapeDtypeStruct((batch, r, r, 3), np.uint8,
                                        sharding=exp.batch_sharding)}


def compiled_memory(exp: Experiment, global_batch: int) -> dict:
  """Per-device memory analysis of the compiled train step (abstract inputs)."""
  compiled = exp.train_step.lower(exp.abstract_for_restore(), _abstract_batch(exp, global_batch),
                                  exp.key, exp.frozen).compile()
  m = compiled.memory_analysis()
  out = {k: int(getattr(m, f"{k}_size_in_bytes")) for k in
         ("argument", "output", "temp", "alias", "generated_code")}
  out["peak_estimate_bytes"] = out["argument"] + out["output"] + out["temp"] - out["alias"]
  out["peak_estimate_gib"] = round(out["peak_estimate_bytes"] / GIB, 3)
  return out


def state_bytes_per_device(exp: Experiment) -> dict:
  """Bytes of params / opt_state / ema_params that one device holds under the trainer's
  shardings (largest shard of each leaf)."""
  abstract = exp.abstract_state
  out = {}
  for part in ("params", "opt_state", "ema_params"):
    leaves = jax.tree_util.tree_leaves(getattr(abstract, part))
    shards = jax.tree_util.tree_leaves(getattr(exp.state_shardings, part))
    total = 0
    for leaf, sh in zip(leaves, shards, strict=True):
      shape = sh.shard_shape(leaf.shape)
      total += int(np.prod(shape, dtype=np.int64)) * leaf.dtype.itemsize
    out[part] = total
  out["total"] = sum(out.values())
  return out


def main() -> None:
  args = ARGS
  if args.batch < 1:
    raise ValueError(f"--batch: expected >= 1, got {args.batch}")
  out = {"benchmark": "memory", "batch_per_device": args.batch, **timing.machine(),
         "train_step": {}}
  one = jax.devices()[:1]
  for name in (v for v in args.variants.split(",") if v):
    for remat in (r for r in args.remat.split(",") if r):
      config = train_step.config_for(name, args.batch)
      config.model.remat = remat
      exp = Experiment(config, devices=one)
      row = compiled_memory(exp, args.batch)
      row["state_bytes"] = state_bytes_per_device(exp)["total"]
      out["train_step"].setdefault(name, {})[f"remat={remat}"] = row
      print(name, remat, row["peak_estimate_gib"], "GiB", file=sys.stderr, flush=True)
  n = jax.device_count()
  fsdp = {}
  for f in (1, n):
    config = train_step.config_for(args.fsdp_variant, n)  # One image per device.
    config.mesh.fsdp = f
    config.mesh.data = n // f
    exp = Experiment(config)
    fsdp[f"fsdp={f}"] = {"state_bytes_per_device": state_bytes_per_device(exp),
                         "compiled_argument_bytes_per_device":
                         compiled_memory(exp, n)["argument"]}
  base, split = fsdp["fsdp=1"], fsdp[f"fsdp={n}"]
  fsdp["state_reduction"] = round(base["state_bytes_per_device"]["total"]
                                  / split["state_bytes_per_device"]["total"], 2)
  fsdp["argument_reduction"] = round(base["compiled_argument_bytes_per_device"]
                                     / split["compiled_argument_bytes_per_device"], 2)
  out["fsdp"] = {"variant": args.fsdp_variant, "devices": n, **fsdp}
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
