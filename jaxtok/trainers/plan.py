r"""Pod readiness without a pod: compile the real train step for a TPU slice and plan the run.

  python -m jaxtok.trainers.plan --config jaxtok/configs/titok.py:variant=S-128,recipe=stage1 \
      --topology v5e:4x4 [--config.mesh.fsdp=4] [--config.batch_size=512] [--search_batch]

With `libtpu` installed (`pip install -e ".[tpu]"`), `jax.experimental.topologies` describes the
devices of a TPU slice on a CPU-only host, and `jax.jit(...).lower(...).compile()` runs the real
XLA TPU compiler for them (deviceless AOT). `plan` builds the trainer's `Experiment` on those
devices (no parameter, optimizer or batch array is materialised: the state and the batch are
shapes with the run's shardings; the frozen networks are built on the host and enter as shapes),
compiles its train step (and its eval step) and prints one JSON record, all figures per chip
(per device where the topology has two devices a chip, v4: each with half the chip's HBM and
peaks):

- memory: `argument_bytes`, `temp_bytes`, `output_bytes`, `alias_bytes` (outputs written into
  donated arguments), `generated_code_bytes`, their total `peak_bytes` against the chip's
  `hbm_bytes`, and `fits`. A batch the compiler rejects for HBM (RESOURCE_EXHAUSTED) gives
  `fits: false` with the compiler's message and its `required_bytes`, not an exception;
- `flops` and `hbm_traffic_bytes` of one step (XLA's cost analysis of the compiled module,
  which counts the body of a while loop once: `while_loop_trips` lists the module's loops and
  `cost_counts_loops_once` says when these figures cover one iteration of a scanned layer
  stack; `--config.model.scan_unroll=DEPTH` unrolls TiTok's stacks for full counts);
- `collectives`: every all-reduce / all-gather / reduce-scatter / all-to-all /
  collective-permute of the compiled HLO with its count and result bytes, ops inside loops
  counted once per iteration (`known_trip_count`);
- a roofline lower bound on the step time, `roofline_step_s` = max(flops / peak bf16 FLOP/s,
  HBM traffic / HBM bandwidth, collective bytes / ICI bandwidth), and the utilisation it
  implies, `roofline_mfu` = flops / (roofline_step_s x peak): an upper bound on what the run can
  reach (XLA's flops count rematerialised work too, so this is hardware FLOP utilisation).

`--search_batch` finds the largest per-chip batch whose step fits (doubling, then bisection).
The chip figures are the published per-chip numbers of each generation (`CHIPS`).
"""
from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.experimental import mesh_utils, topologies
from ml_collections import config_flags

from jaxtok import parallel
from jaxtok.trainers.config import TrainConfig
from jaxtok.trainers.train import Experiment


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  """Published per-chip figures of a TPU generation (Google Cloud TPU system architecture).

  Attributes:
    hbm_bytes: HBM capacity.
    peak_flops: peak dense bf16 FLOP/s.
    hbm_bandwidth: HBM bytes/s.
    ici_bandwidth: inter-chip interconnect bytes/s (all links of one chip together).
  """
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  ici_bandwidth: float


_GIB = 1 << 30
CHIPS = {
    "v4": ChipSpec(32 * _GIB, 275e12, 1200e9, 2400e9 / 8),
    "v5e": ChipSpec(16 * _GIB, 197e12, 819e9, 1600e9 / 8),
    "v5p": ChipSpec(95 * _GIB, 459e12, 2765e9, 4800e9 / 8),
    "v6e": ChipSpec(32 * _GIB, 918e12, 1640e9, 3584e9 / 8),
}
_TOPOLOGY = re.compile(r"^(v\d+[a-z]*):(\d+(?:x\d+){1,2})$")
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_DTYPE_BYTES = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1,
                "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
INSTALL_HINT = 'pip install -e ".[tpu]"'


class LibtpuMissingError(ImportError):
  """`libtpu` (the TPU compiler) is not installed."""


# ==========================================================================================
# Topology.
# ==========================================================================================
def require_libtpu() -> None:
  if importlib.util.find_spec("libtpu") is None:
    raise LibtpuMissingError(f"plan: compiling for a TPU topology needs libtpu, which is not "
                             f"installed; install it with `{INSTALL_HINT}`")


def topology_devices(topology: str) -> tuple[str, list[jax.Device]]:
  """(generation, devices) of a TPU slice named like "v5e:4x4" or "v5p:2x2x1".

  Raises:
    ValueError: an unknown generation or a shape the TPU runtime does not know.
    LibtpuMissingError: libtpu is not installed.
  """
  m = _TOPOLOGY.match(topology or "")
  if m is None or m.group(1) not in CHIPS:
    raise ValueError(f"topology: expected GENERATION:AxB or GENERATION:AxBxC with a generation "
                     f"in {sorted(CHIPS)} (e.g. 'v5e:4x4', 'v5p:4x4x4', 'v4:2x2x2'), got "
                     f"{topology!r}")
  require_libtpu()
  # libtpu takes /tmp/libtpu_lockfile for the life of the first process that loads it; a
  # compile-only client touches no chip, so it need not wait for (or block) other processes
  # that loaded libtpu (pytest-xdist workers, another plan). Read when libtpu loads.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
  except Exception as e:  # The runtime raises JaxRuntimeError or RuntimeError.
    raise ValueError(f"topology: the TPU runtime does not know {topology!r} ({e}); expected a "
                     f"slice shape of a {m.group(1)} pod, e.g. 'v5e:2x2', 'v5e:4x4', "
                     f"'v5p:2x2x1', 'v4:2x2x2'") from e
  return m.group(1), list(desc.devices)


def ordered_devices(devices: list[jax.Device], config: TrainConfig) -> list[jax.Device]:
  """`devices` in the physical order of a (data, fsdp) mesh (ICI neighbours adjacent), as
  `jax.make_mesh` orders a run's own devices; `make_mesh` reshapes the list in this order."""
  n, fsdp = len(devices), config.mesh.fsdp
  if fsdp < 1 or n % fsdp:
    return devices  # make_mesh names the error.
  data = n // fsdp if config.mesh.data == -1 else config.mesh.data
  if data * fsdp != n:
    return devices
  grid = mesh_utils.create_device_mesh((data, fsdp), devices=devices,
                                       allow_split_physical_axes=True)
  return list(grid.flat)


# ==========================================================================================
# The compiled HLO: collectives with loop trip counts.
# ==========================================================================================
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_OP = re.compile(r"^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.+?)\s+([a-z][\w\-]*)\(")
_CALLED = re.compile(r"\b(body|condition|to_apply|calls|true_computation|false_computation)"
                     r"=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_TRIP = re.compile(r'"known_trip_count":\{"n":"(\d+)"')
_ARRAY = re.compile(r"\b([a-z]+\d*[a-z\d]*)\[([\d,]*)\]")


def shape_bytes(shape: str) -> int:
  """Bytes of an HLO result shape: `bf16[16,128]{1,0}` or a tuple of such."""
  total = 0.0
  for dtype, dims in _ARRAY.findall(shape):
    if dtype not in _DTYPE_BYTES:
      continue
    total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return int(total)


def hlo_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """`{op: {"count", "bytes"}}` of the collectives executed by one run of the HLO module.

  Each collective's result bytes count once per execution: an op in a while body whose trip
  count XLA knows counts that many times (a scanned layer stack). Asynchronous pairs count
  at their `-start`.
  """
  ops: dict[str, list[tuple[str, int]]] = {}
  calls: dict[str, list[tuple[str, int]]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    head = _COMPUTATION.match(line)
    if head:
      current = head.group(2)
      ops[current], calls[current] = [], []
      if head.group(1):
        entry = current
      continue
    if current is None:
      continue
    if line.strip() == "}":
      current = None
      continue
    m = _OP.match(line)
    if not m:
      continue
    shape, opcode = m.groups()
    trip = 1
    if opcode == "while":
      t = _TRIP.search(line)
      trip = int(t.group(1)) if t else 1
    for kind, name in _CALLED.findall(line):
      calls[current].append((name, trip if kind == "body" else 1))
    for b in _BRANCHES.findall(line):
      calls[current].extend((name.strip().lstrip("%"), 1) for name in b.split(",") if name)
    base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
    if base in COLLECTIVES and not opcode.endswith("-done"):
      ops[current].append((base, shape_bytes(shape)))
  out = {op: {"count": 0, "bytes": 0} for op in COLLECTIVES}
  if entry is None:
    return out

  def visit(name: str, mult: int, depth: int = 0) -> None:
    if name not in ops or depth > 64:
      return
    for op, nbytes in ops[name]:
      out[op]["count"] += mult
      out[op]["bytes"] += mult * nbytes
    for callee, trip in calls[name]:
      visit(callee, mult * trip, depth + 1)

  visit(entry, 1)
  return out


def hlo_loops(hlo_text: str) -> list[int]:
  """Known trip counts of the module's while loops (a scanned layer stack is one loop)."""
  return [int(t) for line in hlo_text.splitlines() if " while(" in line
          for t in _TRIP.findall(line)]


# ==========================================================================================
# Compiling one function and reading its analyses.
# ==========================================================================================
# "... HLO temporaries (16.60G) exceeds available HBM (15.75G)" or "CompileTimeHbmOom: 47.05G
# exceeds available HBM (15.75G)" (XLA's sizes are binary: G = GiB).
_HBM_OOM = re.compile(r"\(?([\d.]+)([KMGT]?)\)?\s+exceeds available HBM \(([\d.]+)([KMGT]?)\)")
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _oom_bytes(message: str) -> tuple[int | None, int | None]:
  """(required, available) bytes of an XLA TPU out-of-HBM message (None where absent)."""
  m = _HBM_OOM.search(message)
  if m is None:
    return None, None
  return (int(float(m.group(1)) * _UNITS[m.group(2)]),
          int(float(m.group(3)) * _UNITS[m.group(4)]))


def compile_report(jitted, args: tuple, chip: ChipSpec) -> dict[str, Any]:
  """Lowers and compiles `jitted(*args)` (abstract args) and reads memory, cost and HLO.

  A compile that fails for HBM gives `fits: False` with the compiler's `error`, the bytes it
  needed (`required_bytes`, for the part it names) and the HBM it could use
  (`available_bytes`); any other compile error propagates.
  """
  t0 = time.perf_counter()
  lowered = jitted.lower(*args)
  try:
    compiled = lowered.compile()
  except Exception as e:  # XLA raises JaxRuntimeError.
    message = str(e)
    if "RESOURCE_EXHAUSTED" not in message and "HbmOom" not in message:
      raise
    required, available = _oom_bytes(message)
    return {"fits": False, "hbm_bytes": chip.hbm_bytes, "required_bytes": required,
            "available_bytes": available, "error": message.strip().splitlines()[0][:500],
            "compile_s": round(time.perf_counter() - t0, 2)}
  compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  if isinstance(cost, list):  # Older JAX: one dict per computation.
    cost = cost[0]
  argument = int(mem.argument_size_in_bytes)
  output = int(mem.output_size_in_bytes)
  alias = int(mem.alias_size_in_bytes)
  temp = int(mem.temp_size_in_bytes)
  code = int(mem.generated_code_size_in_bytes)
  peak = argument + output - alias + temp + code
  hlo = compiled.as_text()
  collectives = hlo_collectives(hlo)
  loops = [t for t in hlo_loops(hlo) if t > 1]
  flops = float(cost.get("flops", 0.0))
  traffic = float(cost.get("bytes accessed", 0.0))
  coll_bytes = sum(c["bytes"] for c in collectives.values())
  times = {"compute_s": flops / chip.peak_flops, "memory_s": traffic / chip.hbm_bandwidth,
           "collective_s": coll_bytes / chip.ici_bandwidth}
  step_s = max(times.values())
  return {
      "fits": peak <= chip.hbm_bytes, "argument_bytes": argument, "temp_bytes": temp,
      "output_bytes": output, "alias_bytes": alias, "generated_code_bytes": code,
      "peak_bytes": peak, "hbm_bytes": chip.hbm_bytes, "flops": flops,
      "hbm_traffic_bytes": traffic, "collectives": collectives,
      "collective_bytes": coll_bytes,
      "roofline": {**times, "bound": max(times, key=times.get).removesuffix("_s")},
      "roofline_step_s": step_s,
      "roofline_mfu": flops / (step_s * chip.peak_flops) if step_s > 0 else 0.0,
      # XLA's cost analysis counts a while body once, whatever its trip count: with loops
      # (scanned layer stacks), `flops` / `hbm_traffic_bytes` / the roofline cover one
      # iteration of each; unroll them (e.g. --config.model.scan_unroll=DEPTH) for full counts.
      "while_loop_trips": loops, "cost_counts_loops_once": bool(loops),
      "compile_s": round(compile_s, 2)}


# ==========================================================================================
# The plan.
# ==========================================================================================
def plan_config(config: TrainConfig) -> TrainConfig:
  """The run config as planned: a stage-1 teacher's weights do not change the program, so a
  random one of the same architecture stands in (no checkpoint file needed)."""
  config = copy.deepcopy(config)
  if config.recipe == "stage1":
    config.teacher = "random"
  return config


class Planner:
  """The run's `Experiment` on a TPU topology's devices; compiles its steps at any batch.

  Args:
    config: the run config (its `batch_size` is the global batch of `plan()`).
    topology: a TPU slice, e.g. "v5e:4x4" (see `topology_devices`).
  """

  def __init__(self, config: TrainConfig, topology: str):
    self.generation, devices = topology_devices(topology)
    self.topology = topology
    # Some generations' descriptions (v4) give one device per TensorCore, two per chip: the
    # mesh is over devices, and each device gets its share of the chip's HBM and peaks.
    self.num_chips = len({tuple(d.coords) for d in devices})
    self.cores_per_device_chip = len(devices) // self.num_chips
    spec, k = CHIPS[self.generation], self.cores_per_device_chip
    self.chip = ChipSpec(spec.hbm_bytes // k, spec.peak_flops / k, spec.hbm_bandwidth / k,
                         spec.ici_bandwidth / k)
    self.config = plan_config(config)
    self.exp = Experiment(self.config, devices=ordered_devices(devices, self.config))
    if not parallel.compile_only(self.exp.mesh):
      raise RuntimeError("plan: expected compile-only TPU topology devices")
    self.chips = self.exp.mesh.size  # Devices of the mesh (= chips but on v4).
    self.device_kind = devices[0].device_kind

  def _images(self, n: int, dtype, sharding) -> jax.ShapeDtypeStruct:
    r = self.exp.model_config.image_size
    return jax.ShapeDtypeStruct((n, r, r, 3), dtype, sharding=sharding)

  def train_report(self, global_batch: int) -> dict[str, Any]:
    """`compile_report` of the train step at `global_batch` images over the slice."""
    if global_batch < 1 or global_batch % self.chips:
      raise ValueError(f"batch_size: expected a positive multiple of the {self.chips} devices of "
                       f"{self.topology}, got {global_batch}")
    exp = self.exp
    key = jax.ShapeDtypeStruct(exp.key.shape, exp.key.dtype, sharding=exp.replicated)
    batch = {"image": self._images(global_batch, jnp.uint8, exp.batch_sharding)}
    return compile_report(exp.train_step, (exp.abstract_for_restore(), batch, key, exp.frozen),
                          self.chip)

  def eval_report(self) -> dict[str, Any]:
    """`compile_report` of the held-out reconstruction step (EMA weights, replicated
    `config.data.num_eval_images` images, as `Experiment.reconstruct`)."""
    exp = self.exp
    state = exp.abstract_for_restore()
    images = self._images(max(1, exp.config.data.num_eval_images), jnp.float32, exp.replicated)
    return compile_report(exp._eval, (state.ema_params, state.model_state, images), self.chip)

  def search_batch(self, limit: int = 4096) -> dict[str, Any]:
    """The largest per-chip batch (<= `limit`) whose train step fits, and its report."""
    reports: dict[int, dict[str, Any]] = {}

    def fits(b: int) -> bool:
      reports[b] = self.train_report(b * self.chips)
      return reports[b]["fits"]

    if not fits(1):
      return {"per_chip_batch": 0, "global_batch": 0, "tried": sorted(reports),
              "report": reports[1]}
    lo, hi = 1, None
    while hi is None:
      b = lo * 2
      if b > limit:
        break
      if fits(b):
        lo = b
      else:
        hi = b
    if hi is not None:
      while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"per_chip_batch": lo, "global_batch": lo * self.chips, "tried": sorted(reports),
            "report": reports[lo]}

  def header(self, global_batch: int) -> dict[str, Any]:
    c = self.config
    return {"topology": self.topology, "device_kind": self.device_kind,
            "chips": self.num_chips, "devices": self.chips,
            "devices_per_chip": self.cores_per_device_chip,
            "mesh": dict(self.exp.mesh.shape), "family": c.family, "recipe": c.recipe,
            "config_name": c.name, "dtype": c.dtype,
            "remat": getattr(self.exp.model_config, "remat", None),
            "global_batch": global_batch, "per_chip_batch": global_batch // self.chips,
            "chip": dataclasses.asdict(self.chip)}


def plan(config: TrainConfig, topology: str, *, search_batch: bool = False,
         eval_step: bool = True) -> dict[str, Any]:
  """The run plan of `config` on `topology` as one JSON-able dict (see the module doc).

  Per-image figures (`flops_per_image`, `hbm_traffic_per_image`) are the per-device ones over
  the per-device batch (`per_chip_batch`).
  """
  planner = Planner(config, topology)
  out = planner.header(config.batch_size)
  train = planner.train_report(config.batch_size)
  out.update(train)
  per_chip = config.batch_size // planner.chips
  if "flops" in train:
    out["flops_per_image"] = train["flops"] / per_chip
    out["hbm_traffic_per_image"] = train["hbm_traffic_bytes"] / per_chip
  if eval_step:
    out["eval"] = planner.eval_report()
  if search_batch:
    found = planner.search_batch()
    report = found.pop("report")
    found.update({k: report.get(k) for k in ("peak_bytes", "temp_bytes", "roofline_step_s",
                                             "roofline_mfu")})
    out["search"] = found
  return out


# ==========================================================================================
# Command line.
# ==========================================================================================
def main(argv=None) -> None:
  config_flags.DEFINE_config_file("config", None, "Training config file (as jaxtok.trainers."
                                  "train --config), with --config.FIELD=VALUE overrides.",
                                  lock_config=False)
  flags.DEFINE_string("topology", None, "TPU slice, e.g. v5e:4x4, v5e:16x16, v5p:4x4x4, "
                      "v4:2x2x2.")
  flags.DEFINE_bool("search_batch", False, "Also find the largest per-chip batch that fits.")
  flags.DEFINE_bool("eval_step", True, "Also compile the eval (reconstruction) step.")
  flags.mark_flags_as_required(["config", "topology"])
  flag_values = flags.FLAGS

  def _main(_):
    try:
      result = plan(flag_values.config, flag_values.topology,
                    search_batch=flag_values.search_batch, eval_step=flag_values.eval_step)
    except (LibtpuMissingError, ValueError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(json.dumps(result, indent=2))

  app.run(_main, argv=argv)


if __name__ == "__main__":
  main()
