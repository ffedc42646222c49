"""Deviceless TPU compilation of the real train step and the run plan (jaxtok.trainers.plan).

The compile tests need `libtpu` (the `tpu` extra, installed by .ci/run) and skip only where it
is not installed; the HLO parsing and the argument errors need nothing.
"""
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import pytest

from jaxtok import parallel
from jaxtok.configs import titok as titok_configs
from jaxtok.trainers import plan as plan_lib

HAS_LIBTPU = importlib.util.find_spec("libtpu") is not None
NO_LIBTPU = 'libtpu not installed (pip install -e ".[tpu]")'
needs_libtpu = pytest.mark.skipif(not HAS_LIBTPU, reason=NO_LIBTPU)

REQUIRED_KEYS = ("topology", "chips", "global_batch", "argument_bytes", "temp_bytes",
                 "output_bytes", "hbm_bytes", "fits", "flops", "hbm_traffic_bytes",
                 "collectives", "roofline_step_s", "roofline_mfu")


def smoke_stage1():
  return titok_configs.get_config("variant=S-128,recipe=stage1,smoke")


# An HLO module shaped like a compiled scanned layer stack: an async all-reduce in a while body
# that runs 4 times, one all-gather at the top level, a reducer computation with no collective.
HLO = """HloModule jit_step, entry_computation_layout={(f32[8]{0})->f32[8]{0}}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %s = f32[] add(f32[] %a, f32[] %b)
}

%body (p: (s32[], bf16[16,128])) -> (s32[], bf16[16,128]) {
  %p = (s32[], bf16[16,128]{1,0}) parameter(0)
  %x = bf16[16,128]{1,0:T(8,128)(2,1)} get-tuple-element(%p), index=1
  %ars = bf16[16,128]{1,0:T(8,128)(2,1)} all-reduce-start(%x), channel_id=1, to_apply=%add
  %ard = bf16[16,128]{1,0:T(8,128)(2,1)} all-reduce-done(%ars)
  ROOT %t = (s32[], bf16[16,128]{1,0}) tuple(%i, %ard)
}

%cond (p: (s32[], bf16[16,128])) -> pred[] {
  ROOT %lt = pred[] compare(%i, %n), direction=LT
}

ENTRY %main (x: f32[8]) -> f32[8] {
  %x = f32[8]{0} parameter(0)
  %g = f32[32]{0} all-gather(f32[8]{0} %x), dimensions={0}, replica_groups={{0,1,2,3}}
  %w = (s32[], bf16[16,128]{1,0}) while(%init), condition=%cond, body=%body, \
backend_config={"known_trip_count":{"n":"4"}}
  ROOT %r = f32[8]{0} slice(%g), slice={[0:8]}
}
"""


def test_out_of_hbm_messages_are_parsed():
  g = 1 << 30
  assert plan_lib._oom_bytes("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory "
                             "required for HLO temporaries (16.60G) exceeds available HBM "
                             "(15.75G).") == (int(16.60 * g), int(15.75 * g))
  assert plan_lib._oom_bytes("RESOURCE_EXHAUSTED: CompileTimeHbmOom: 47.05G exceeds available "
                             "HBM (15.75G)") == (int(47.05 * g), int(15.75 * g))
  assert plan_lib._oom_bytes("INTERNAL: something else") == (None, None)


def test_hlo_collectives_count_loop_trips_and_bytes():
  out = plan_lib.hlo_collectives(HLO)
  assert out["all-reduce"] == {"count": 4, "bytes": 4 * 16 * 128 * 2}
  assert out["all-gather"] == {"count": 1, "bytes": 32 * 4}
  assert out["reduce-scatter"] == {"count": 0, "bytes": 0}
  assert plan_lib.hlo_loops(HLO) == [4]
  assert plan_lib.shape_bytes("(f32[2,3]{1,0}, bf16[4]{0}, s32[])") == 24 + 8 + 4


@pytest.mark.parametrize("topology", ["v5e-16", "v5e:4", "v99:2x2", "", "tpu:2x2"])
def test_unknown_topology_names_the_argument(topology):
  with pytest.raises(ValueError, match="topology: expected GENERATION:AxB"):
    plan_lib.topology_devices(topology)


def test_missing_libtpu_says_how_to_install(monkeypatch):
  real = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "libtpu" else real(name, *a))
  with pytest.raises(plan_lib.LibtpuMissingError, match=r'pip install -e "\.\[tpu\]"'):
    plan_lib.plan(smoke_stage1(), "v5e:2x2")


@needs_libtpu
def test_unknown_slice_shape_of_a_known_generation():
  with pytest.raises(ValueError, match="topology: the TPU runtime does not know 'v5e:3x5'"):
    plan_lib.topology_devices("v5e:3x5")


@needs_libtpu
def test_v4_describes_two_devices_a_chip():
  generation, devices = plan_lib.topology_devices("v4:2x2x2")
  assert generation == "v4" and len(devices) == 16
  assert len({tuple(d.coords) for d in devices}) == 8  # The planner halves HBM / peaks.


@pytest.fixture(scope="module")
def planner():
  if not HAS_LIBTPU:
    pytest.skip(NO_LIBTPU)
  return plan_lib.Planner(smoke_stage1(), "v5e:2x2")


@needs_libtpu
@pytest.mark.slow  # Two TPU compiles of the smoke step: about a minute on 2 cores.
def test_smoke_titok_plan_on_v5e_2x2(planner):
  config = smoke_stage1()
  out = plan_lib.plan(config, "v5e:2x2", eval_step=True)
  json.dumps(out)  # One JSON record.
  for key in REQUIRED_KEYS:
    assert key in out, key
  assert out["topology"] == "v5e:2x2" and out["chips"] == out["devices"] == 4
  assert out["devices_per_chip"] == 1
  assert out["device_kind"].startswith("TPU v5")
  assert out["mesh"] == {"data": 4, "fsdp": 1}
  assert out["global_batch"] == config.batch_size and out["per_chip_batch"] == 2
  assert out["fits"] is True and out["hbm_bytes"] == 16 << 30
  assert out["argument_bytes"] > 0 and out["output_bytes"] > 0
  assert out["peak_bytes"] >= out["argument_bytes"] + out["temp_bytes"]
  assert out["flops"] > 0 and out["hbm_traffic_bytes"] > 0
  # Data parallel: the gradients are summed over the 4 chips.
  assert out["collectives"]["all-reduce"]["count"] >= 1
  assert out["collectives"]["all-reduce"]["bytes"] > 0
  assert out["roofline_step_s"] == max(out["roofline"][k] for k in
                                       ("compute_s", "memory_s", "collective_s"))
  assert 0 < out["roofline_mfu"] <= 1
  assert out["eval"]["fits"] is True and out["eval"]["flops"] > 0
  assert out["cost_counts_loops_once"] is bool(out["while_loop_trips"])


@needs_libtpu
def test_too_large_batch_reports_does_not_fit(planner):
  out = planner.train_report(4 * 65536)
  assert out["fits"] is False
  assert out["required_bytes"] > out["available_bytes"] > 15 << 30
  assert "RESOURCE_EXHAUSTED" in out["error"] or "HbmOom" in out["error"]


@needs_libtpu
def test_batch_must_split_over_the_chips(planner):
  with pytest.raises(ValueError, match="batch_size: expected a positive multiple of the 4"):
    planner.train_report(6)


@needs_libtpu
def test_experiment_on_a_tpu_mesh_traces_the_tpu_kernels(planner, monkeypatch):
  """Built on a CPU host for TPU devices, the step's "auto" attention is the TPU ("xla")
  kernel: the choice follows the Experiment's mesh, not jax.default_backend()."""
  assert jax.default_backend() == "cpu"
  assert parallel.compile_only(planner.exp.mesh)
  assert parallel.mesh_platform(planner.exp.mesh) == "tpu"
  calls = []
  real = jax.nn.dot_product_attention
  monkeypatch.setattr(jax.nn, "dot_product_attention",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  exp = planner.exp
  key = jax.ShapeDtypeStruct(exp.key.shape, exp.key.dtype, sharding=exp.replicated)
  batch = {"image": planner._images(12, jnp.uint8, exp.batch_sharding)}  # A new trace.
  exp.train_step.trace(exp.abstract_for_restore(), batch, key, exp.frozen)
  assert calls  # Every attention of the encoder / decoder went through the "xla" kernel.


@needs_libtpu
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("JAXTOK_FULL_PLAN") != "1", reason=(
    "one full-size TPU compile, 806-1302 s on 2 cores, would put CI near its 90-minute limit: "
    "run with JAXTOK_FULL_PLAN=1 (benchmarks/plan_pods.py measures the same compile)"))
def test_s128_stage1_official_batch_fits_v5e_4x4():
  config = titok_configs.get_config("variant=S-128,recipe=stage1")
  config.dtype = "bfloat16"
  assert config.batch_size == 256
  out = plan_lib.plan(config, "v5e:4x4", eval_step=False)
  assert out["per_chip_batch"] == 16
  assert out["fits"] is True, out.get("error")
  assert out["peak_bytes"] <= out["hbm_bytes"]


@pytest.mark.parametrize("largest", [0, 1, 37, 64, 5000])
def test_search_batch_finds_the_largest_fitting_per_chip_batch(largest):
  planner = object.__new__(plan_lib.Planner)  # The search alone: compiles are stubbed.
  planner.chips = 4
  tried = []

  def report(global_batch):
    tried.append(global_batch // 4)
    return {"fits": global_batch // 4 <= largest, "peak_bytes": global_batch}

  planner.train_report = report
  found = planner.search_batch(limit=4096)
  expected = min(largest, 4096)
  assert found["per_chip_batch"] == expected and found["global_batch"] == 4 * expected
  assert found["report"]["fits"] is (expected > 0)
  assert len(tried) == len(set(tried)) <= 2 * 13  # Doubling, then bisection.
