"""What a training run shows: metrics files, TensorBoard, reconstruction grids, progress bar.

Only the primary process writes (`enabled=False` elsewhere).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tensorboardX import SummaryWriter
from tqdm import tqdm

from jaxtok.eval import fid

# Metrics shown next to the progress bar (by their last path component).
BAR_METRICS = ("loss/total_loss", "loss/reconstruction_loss", "train/psnr", "codebook/usage",
               "codebook/perplexity")


class MetricWriter:
  """`metrics.jsonl` + TensorBoard event files (tensorboardX: no TensorFlow needed)."""

  def __init__(self, workdir: Path, enabled: bool = True):
    self.enabled = enabled
    # Open for the whole run (closed by `close`), appended to across restarts.
    self.jsonl = (open(workdir / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115
                  if enabled else None)
    self.tb = SummaryWriter(str(workdir / "tensorboard")) if enabled else None

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    for k, v in metrics.items():
      self.tb.add_scalar(k, float(v), int(step))

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled:
      self.tb.add_image(name, image, int(step), dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self.jsonl.close()
      self.tb.close()


class ProgressBar:
  """A tqdm bar with the main losses as postfix; a no-op when disabled."""

  def __init__(self, total: int, initial: int, enabled: bool):
    self.bar = (tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train")
                if enabled else None)

  def update(self, metrics: Mapping[str, Any]) -> None:
    if self.bar is not None:
      self.bar.update(1)
      self.bar.set_postfix({k.split("/")[-1]: f"{float(v):.4g}" for k, v in metrics.items()
                            if k in BAR_METRICS})

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def grid_image(originals: np.ndarray, recons: np.ndarray, pad: int = 2) -> np.ndarray:
  """Two rows: originals `[N, R, R, 3]` uint8 on top, reconstructions (float [0,1]) below.

  Returns:
    `[2R + 3 pad, N R + (N + 1) pad, 3]` uint8 on a white background.
  """
  n, r = originals.shape[0], originals.shape[1]
  rec = fid.to_uint8(recons)
  out = np.full((2 * r + 3 * pad, n * r + (n + 1) * pad, 3), 255, np.uint8)
  for i in range(n):
    x = pad + i * (r + pad)
    out[pad:pad + r, x:x + r] = originals[i]
    out[2 * pad + r:2 * pad + 2 * r, x:x + r] = rec[i]
  return out


def save_grid(workdir: Path, step: int, originals: np.ndarray, recons: np.ndarray) -> Path:
  """Writes `grids/step_XXXXXXX.png` and `recon_grid.png` (latest); returns the latter."""
  img = Image.fromarray(grid_image(originals, recons))
  (workdir / "grids").mkdir(exist_ok=True)
  img.save(workdir / "grids" / f"step_{step:07d}.png")
  latest = workdir / "recon_grid.png"
  img.save(latest)
  return latest


def print_summary(summary: Mapping[str, Any]) -> None:
  """The run's last words: status, held-out PSNR before/after, grid and export paths."""
  lines = [f"[jaxtok] {summary['status']} at step {summary['step']} ({summary['origin']})"]
  if "psnr_after" in summary:
    lines.append(f"[jaxtok] held-out PSNR before training: {summary['psnr_before']:.2f} dB; "
                 f"after: {summary['psnr_after']:.2f} dB "
                 f"({summary['psnr_after'] - summary['psnr_before']:+.2f} dB)")
  if summary.get("grid"):
    lines.append(f"[jaxtok] reconstruction grid (top: held-out originals, bottom: "
                 f"reconstructions): {summary['grid']}")
  if summary.get("export"):
    lines.append(f"[jaxtok] EMA weights exported to {summary['export']} "
                 f"(jaxtok.load(...))")
  print("\n".join(lines), flush=True)
