r"""jaxtok against same-shape PyTorch on this machine, in one run; one JSON + a ratio summary.

    PYTHONPATH=. python benchmarks/vs_torch.py     # everything: ~8 min on an idle 2-core CPU
    PYTHONPATH=. python benchmarks/vs_torch.py --only encode_decode --variants S-128

Runs, each in its own process (a fresh XLA and torch runtime, as a user would), the
benchmarks that time jaxtok and a PyTorch model of the same shapes in alternation:

- `encode_decode.py --torch`: TiTok S-128 / B-64 / L-32 encode and decode (incl. the MaskGIT
  pixel decoder), batch `--batch`, beside `torch_titok.TorchTiTok`;
- `fid.py`: the FID Inception features beside the TorchScript Inception (`default_1.pt`);
- `train_step.py --torch`: the stage-1 training step (forward + backward + AdamW + EMA, frozen
  teacher) of S-128 at batch 4 beside a same-shape torch step, and the tiny trainer's steps/s.

Each child reports both frameworks' 2048^2 float32 matmul peak of its own run and the load
average beside its figures. The summary lists every jaxtok/torch ratio (> 1: jaxtok faster)
next to the issue's targets. No timed asserts.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Targets of the speed issue (jaxtok / PyTorch).
TARGETS = {"encode": 1.1, "decode": 1.5, "fid": 1.5, "train_step": 1.3}


def _run(script: str, args: list[str]) -> dict:
  cmd = [sys.executable, os.path.join(HERE, script), *args]
  print("+", " ".join(cmd), file=sys.stderr, flush=True)
  proc = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True)
  return json.loads(proc.stdout)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--only", default="encode_decode,fid,train_step")
  p.add_argument("--variants", default="S-128,B-64,L-32")
  p.add_argument("--batch", type=int, default=8, help="encode/decode batch")
  p.add_argument("--repeats", type=int, default=2, help="alternating turns per figure")
  args = p.parse_args(argv)
  parts = {s for s in args.only.split(",") if s}
  out, summary = {"benchmark": "vs_torch", "loadavg_1_5_15_before":
                  [round(x, 2) for x in os.getloadavg()]}, {}
  if "encode_decode" in parts:
    r = _run("encode_decode.py", ["--torch", "--variants", args.variants, "--batch",
                                  str(args.batch), "--repeats", str(args.repeats)])
    out["encode_decode"] = r
    for name, v in r["variants"].items():
      for k in ("encode", "decode"):
        summary[f"titok_{name}_{k}"] = {
            "ratio": v["same_shape_torch_same_run"][k]["jax_speedup_vs_torch"],
            "target": TARGETS[k], "loadavg_1": v["loadavg_1"]}
  if "fid" in parts:
    r = _run("fid.py", ["--batch-sizes", "16", "--repeats", str(args.repeats)])
    out["fid"] = r
    for run in r["runs"]:
      summary[f"fid_features_batch{run['batch_size']}"] = {
          "ratio": round(run["speedup_vs_torch"], 3), "target": TARGETS["fid"],
          "loadavg_1": run["loadavg_1"]}
  if "train_step" in parts:
    r = _run("train_step.py", ["--torch", "--configs", "S-128,tiny", "--s128_batch", "4",
                               "--steps", str(max(5, 5 * args.repeats))])
    out["train_step"] = r
    for res in r["results"]:
      if "same_shape_torch_same_run" in res:
        summary[f"train_step_{res['config']}_batch{res['batch_size']}"] = {
            "ratio": round(res["same_shape_torch_same_run"]["jax_speedup_vs_torch"], 3),
            "target": TARGETS["train_step"], "loadavg_1": res["loadavg_1"]}
      else:
        summary[f"train_step_{res['config']}_steps_per_s"] = round(res["steps_per_sec"], 3)
  out["summary_jax_over_torch"] = summary
  out["loadavg_1_5_15_after"] = [round(x, 2) for x in os.getloadavg()]
  print(json.dumps(out, indent=2))


if __name__ == "__main__":
  main()
