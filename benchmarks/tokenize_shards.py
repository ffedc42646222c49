"""Images/s of the tokenization CLI beside plain `tok.encode` in the same run; prints JSON.

(Not `benchmarks/tokenize.py`: run as a script, that name would shadow the standard library's
`tokenize` module, which Python imports at start-up.)

    python benchmarks/tokenize_shards.py                          # titok:S-128, 64 images, batch 8
    python benchmarks/tokenize_shards.py --variant titok:smoke --images 32 --devices 8

Writes `--images` PNGs (256 px crops of the bundled photos, at the variant's image size) to a
temp folder, then (1) times `tok.encode` on them in batches of `--batch` after one warm-up
(compile) call, median of `--repeats` passes, and (2) runs `python -m jaxtok.tokenize` on the
folder (a subprocess, `--devices` CPU devices) and reads its summary: `images_per_s` of its
loop (PNG decode + resize + sharded encode + ArrayRecord write, after compilation) and the
process's wall time (JAX start-up, tokenizer init, compilation included). Random weights
(the speed does not depend on them). The load average is printed: figures taken on a busy
machine are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

import jaxtok
from jaxtok import data as data_lib


def write_images(folder: Path, n: int, size: int) -> None:
  photos = list(data_lib.bundled_photos().values())
  for i in range(n):
    photo = photos[i % len(photos)]
    shift = 5 * (i // len(photos))
    crop = data_lib.center_crop_resize(photo[shift:, shift:], size)
    Image.fromarray(crop).save(folder / f"img{i:04d}.png")


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--variant", default="titok:S-128")
  p.add_argument("--images", type=int, default=64)
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--devices", type=int, default=1, help="CPU devices of the CLI process")
  args = p.parse_args()

  tok = jaxtok.load(args.variant)
  with tempfile.TemporaryDirectory() as tmp:
    folder, out = Path(tmp) / "images", Path(tmp) / "tokens"
    folder.mkdir()
    write_images(folder, args.images, tok.image_size)
    images = data_lib.eval_images(f"folder:{folder}", tok.image_size)
    batches = [images[i:i + args.batch] for i in range(0, len(images), args.batch)]
    tok.encode(batches[0])  # Compile.
    times = []
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      for b in batches:
        tok.encode(b)
      times.append(time.perf_counter() - t0)
    encode_ips = len(images) / statistics.median(times)

    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={args.devices}")
    cmd = [sys.executable, "-m", "jaxtok.tokenize", "--checkpoint", args.variant, "--data",
           f"folder:{folder}", "--out", str(out), "--batch_size", str(args.batch),
           "--no_progress"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode:
      sys.exit(proc.stderr[-3000:])
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("[jaxtok.tokenize] "))
    summary = json.loads(line.split(" ", 1)[1])
    shard_bytes = sum(f.stat().st_size for f in out.rglob("*.array_record"))

  print(json.dumps({
      "variant": args.variant, "images": args.images, "batch": args.batch,
      "image_size": tok.image_size, "num_tokens": tok.num_tokens,
      "tok_encode_images_per_s": round(encode_ips, 2),
      "cli_images_per_s": summary["images_per_s"],
      "cli_over_encode": round(summary["images_per_s"] / encode_ips, 3),
      "cli_compile_s": summary["compile_s"], "cli_devices": summary["devices"],
      "cli_process_wall_s": round(wall, 2),
      "cli_process_images_per_s": round(args.images / wall, 2),
      "shard_bytes": shard_bytes, "load_average": [round(x, 2) for x in os.getloadavg()],
      "cpus": os.cpu_count(), "encode_times_s": [round(t, 3) for t in times],
      "numpy": np.__version__}, indent=1))


if __name__ == "__main__":
  main()
