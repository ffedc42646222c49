"""Shared pieces of the tokenization tests: a folder of real photos and a CLI runner."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "coins")


def photo_folder(root: Path, n: int, *, classes: int = 0, size: int = 48) -> list[str]:
  """Writes `n` small PNGs cut from skimage photos under `root` (in `classes` sub-dirs when
  > 0); returns their paths relative to `root`, sorted (the order `folder:` sources list)."""
  rel = []
  for i in range(n):
    photo = np.asarray(getattr(skimage.data, PHOTOS[i % len(PHOTOS)])())
    # A different crop of the photo for every file, so no two images are equal.
    top, left = 7 * (i // len(PHOTOS)), 11 * (i // len(PHOTOS))
    crop = photo[top:top + 200, left:left + 240]
    name = f"img{i:03d}.png" if not classes else f"class{i % classes}/img{i:03d}.png"
    (root / name).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(crop).resize((size + i % 3, size)).save(root / name)
    rel.append(name)
  return sorted(rel)


def cli_env(devices: int, **extra) -> dict[str, str]:
  return dict(os.environ, JAX_PLATFORMS="cpu",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", **extra)


def cli_args(folder: Path, out: Path, *, batch_size: int, shard_size: int) -> list[str]:
  return ["--checkpoint", "titok:smoke", "--data", f"folder:{folder}", "--out", str(out),
          "--batch_size", str(batch_size), "--shard_size", str(shard_size), "--no_progress"]


def run_cli(args: list[str], env: dict[str, str], timeout: int = 300) -> dict:
  """Runs `python -m jaxtok.tokenize ARGS`; returns its JSON summary."""
  proc = subprocess.run([sys.executable, "-m", "jaxtok.tokenize", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return summary_of(proc.stdout)


def summary_of(stdout: str) -> dict:
  lines = [ln for ln in stdout.splitlines() if ln.startswith("[jaxtok.tokenize] ")]
  assert len(lines) == 1, stdout
  return json.loads(lines[0].split(" ", 1)[1])
