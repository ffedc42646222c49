"""The trainer's prefix report for ordered tokenizers: PSNR per prefix and the prefix grid."""
import numpy as np
import pytest
from PIL import Image

from jaxtok.configs.one_d_piece import get_config
from jaxtok.trainers import feedback
from jaxtok.trainers.train import train_and_evaluate


def test_prefix_lengths():
  assert feedback.prefix_lengths(1) == [1]
  assert feedback.prefix_lengths(8) == [1, 2, 4, 8]
  assert feedback.prefix_lengths(6) == [1, 2, 4, 6]
  assert feedback.prefix_lengths(64) == [1, 2, 4, 8, 16, 32, 64]


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_one_d_piece_run_reports_prefix_curve_and_grid(tmp_path):
  config = get_config("smoke")
  config.data.num_eval_images = 3
  summary = train_and_evaluate(config, tmp_path)
  k = config.model.num_latent_tokens
  curve = summary["prefix_psnr"]
  assert list(curve) == feedback.prefix_lengths(k)
  assert all(np.isfinite(v) for v in curve.values())
  # All K tokens decode exactly what the held-out evaluation decoded.
  assert abs(curve[k] - summary["psnr_after"]) < 1e-3
  grid = np.asarray(Image.open(summary["prefix_grid"]))
  size, pad = config.model.image_size, 2
  assert grid.shape[0] == (1 + len(curve)) * (size + pad) + pad
  assert grid.shape[1] == 3 * (size + pad) + pad
  table = feedback.summary_table(summary)
  assert "held-out PSNR by prefix" in table and "prefix_grid.png" in table
