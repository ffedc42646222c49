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

# Metrics shown next to the progress bar: (metric key, short label). "codes": the batch's
# perplexity, the effective number of distinct codes it used (a collapsing VQ codebook shows a
# few; the fraction of the codebook used would read 1e-6 for an FSQ codebook of 2^30 codes).
BAR_METRICS = (("loss/total_loss", "loss"), ("train/psnr", "psnr"),
               ("codebook/perplexity", "codes"))


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
  """A tqdm bar: steps, images/s, the main losses and the last held-out PSNR; a no-op when
  disabled (non-primary processes, `config.progress_bar=False`)."""

  def __init__(self, total: int, initial: int, enabled: bool, batch_size: int = 1):
    self.bar = (tqdm(total=total, initial=initial, dynamic_ncols=True, desc="train",
                     unit="step") if enabled else None)
    self.batch_size = batch_size
    self.heldout_psnr: float | None = None

  def set_heldout_psnr(self, psnr: float) -> None:
    """Shown as `held-out` until the next evaluation."""
    self.heldout_psnr = float(psnr)

  def update(self, metrics: Mapping[str, Any]) -> None:
    if self.bar is None:
      return
    self.bar.update(1)
    post = {}
    rate = self.bar.format_dict.get("rate")  # tqdm's smoothed steps/s (None at first).
    if rate:
      post["img/s"] = f"{rate * self.batch_size:.0f}"
    for key, label in BAR_METRICS:
      if key in metrics:
        post[label] = f"{float(metrics[key]):.4g}"
    if self.heldout_psnr is not None:
      post["held-out"] = f"{self.heldout_psnr:.2f} dB"
    self.bar.set_postfix(post, refresh=False)

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


def prefix_lengths(num_tokens: int) -> list[int]:
  """1, 2, 4, ... up to and including `num_tokens`: the prefixes the run reports."""
  out = [1 << i for i in range(num_tokens.bit_length()) if 1 << i < num_tokens]
  return out + [num_tokens]


def save_prefix_grid(workdir: Path, originals: np.ndarray,
                     recons: Mapping[int, np.ndarray], pad: int = 2) -> Path:
  """Writes `prefix_grid.png`: held-out originals in the top row, then one row of
  reconstructions per prefix length (ascending); returns its path."""
  r = originals.shape[1]
  rows = [grid_image(originals, recons[k], pad)[pad + r:2 * pad + 2 * r] for k in sorted(recons)]
  top = grid_image(originals, recons[min(recons)], pad)
  path = workdir / "prefix_grid.png"
  Image.fromarray(np.concatenate([top[:pad + r], *rows, top[-pad:]], axis=0)).save(path)
  return path


def _codebook_rows(results: Mapping[str, Any]) -> list[tuple[str, str]]:
  """Held-out codebook usage rows from the codebook evaluator's final figures: one per
  sub-codebook (`eval/codebook/factor/<name>/...`, FQGAN branches), else the whole codebook."""
  prefix = "eval/codebook/"
  names = sorted({k[len(prefix + "factor/"):].rsplit("/", 1)[0] for k in results
                  if k.startswith(prefix + "factor/") and k.endswith("/usage")})
  keys = [(f"codebook usage ({n})", f"{prefix}factor/{n}/") for n in names]
  if not keys and f"{prefix}usage" in results:
    keys = [("codebook usage", prefix)]
  return [(label, f"{100 * results[k + 'usage']:.1f} % of codes, perplexity "
                  f"{results[k + 'perplexity']:.1f}, {results[k + 'dead_codes']:.0f} dead")
          for label, k in keys]


def summary_table(summary: Mapping[str, Any]) -> str:
  """The run's figures as a small aligned two-column table (only the rows it has)."""
  rows = [("status", f"{summary['status']} at step {summary['step']} ({summary['origin']})")]
  if "train_seconds" in summary:
    rows.append(("training time", f"{summary['train_seconds']:.0f} s, "
                                  f"{summary['images_per_sec']:.0f} images/s"))
  if "psnr_after" in summary:
    rows.append(("held-out PSNR", f"{summary['psnr_before']:.2f} dB before -> "
                                  f"{summary['psnr_after']:.2f} dB after "
                                  f"({summary['psnr_after'] - summary['psnr_before']:+.2f} dB)"))
  if "tokens_per_image" in summary:
    line = f"{summary['tokens_per_image']}"
    if summary.get("bytes_per_image") is not None:
      line += (f" ({summary['bits_per_token']:.3g} bits each: "
               f"{summary['bytes_per_image']:.0f} bytes per image)")
    rows.append(("tokens per image", line))
  if summary.get("grid"):
    rows.append(("grid", f"{summary['grid']} (top: held-out originals, bottom: "
                         "reconstructions)"))
  if summary.get("prefix_psnr"):
    curve = ", ".join(f"{k}: {v:.2f}" for k, v in summary["prefix_psnr"].items())
    rows.append(("held-out PSNR by prefix", f"{curve} dB (tokens: dB)"))
    rows.append(("prefix grid", f"{summary['prefix_grid']} (top: originals; then 1, 2, 4, "
                                "... tokens)"))
  rows.extend(_codebook_rows(summary.get("evaluators") or {}))
  if summary.get("export"):
    rows.append(("export", f"{summary['export']} (EMA weights; jaxtok.load(...))"))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"[jaxtok] {k.ljust(width)}  {v}" for k, v in rows)


def print_summary(summary: Mapping[str, Any]) -> None:
  """The run's last words: the `summary_table`."""
  print(summary_table(summary), flush=True)
