"""End-to-end runs of `python -m jaxtok.eval` (in-process through `evaluate`)."""
import json

import numpy as np
import pytest
from PIL import Image

import jaxtok
from jaxtok.eval import __main__ as cli


@pytest.fixture
def folder(tmp_path):
  rng = np.random.default_rng(0)
  d = tmp_path / "imgs"
  d.mkdir()
  for i in range(6):
    yy, xx = np.mgrid[:80, :96]
    img = (127 + 100 * np.sin(xx / (5 + i) + yy / 9)[..., None] * rng.random(3)).clip(0, 255)
    Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
  return d


def test_one_d_piece_metrics(folder, tmp_path):
  out = tmp_path / "out"
  record = cli.evaluate(["--checkpoint", "one_d_piece:tiny", "--data", f"folder:{folder}",
                         "--metrics", "psnr,ssim,codebook", "--out", str(out),
                         "--batch-size", "6"])
  m = json.loads((out / "metrics.json").read_text())["metrics"]
  assert record["num_images"] == 6 and record["resolution"] == 64
  k = jaxtok.load("one_d_piece:tiny").num_tokens
  assert np.isfinite(m["recon/psnr"]) and m["codebook/num_tokens"] == 6 * k
  assert len(m["codebook/position/usage"]) == k


def test_rate_distortion_is_the_codec_command(folder, tmp_path, capsys):
  # One `rd`: `python -m jaxtok.codec rd` (tests/codec); this CLI names it and does nothing.
  for argv in (["--checkpoint", "one_d_piece:tiny", "--metrics", "psnr,rd"],
               ["--metrics", "rd"]):
    assert cli.main([*argv, "--data", f"folder:{folder}", "--out", str(tmp_path / "o")]) == 2
    assert "python -m jaxtok.codec rd" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()  # Refused before any work.


@pytest.mark.slow  # ~60 s of real-Inception features.
def test_fid_between_photos_and_their_jpeg_copies(tmp_path):
  out = tmp_path / "cmp"
  record = cli.evaluate(["--data", "bundled", "--compare", "jpeg:30", "--resolution", "64",
                         "--tiles", "2", "--out", str(out), "--fid-method", "eigh",
                         "--batch-size", "8", "--save-stats", str(tmp_path / "s.npz")])
  m = record["metrics"]
  assert m["fid/num_images"] == record["num_images"] >= 8
  assert m["fid"] > 0 and 0 < m["jpeg/ssim"] < 1 and m["jpeg/bytes_per_image"] > 0
  with np.load(tmp_path / "s.npz") as f:
    assert f["mu"].shape == (2048,) and f["sigma"].shape == (2048, 2048)
  assert json.loads((out / "metrics.json").read_text())["metrics"]["fid"] == m["fid"]


def test_bad_arguments_exit_2(tmp_path, capsys):
  assert cli.main(["--data", "bundled", "--out", str(tmp_path), "--compare", "png:3"]) == 2
  assert "--compare" in capsys.readouterr().err
  assert cli.main(["--data", "bundled", "--out", str(tmp_path), "--metrics", "psnr"]) == 2
