r"""Evaluation CLI: writes `metrics.json` for a tokenizer or between image sources.

Tokenizer metrics (checkpoint directory or variant name, random init for a variant):

  python -m jaxtok.eval --checkpoint DIR|VARIANT --data SOURCE \
      --metrics fid,psnr,ssim,codebook --out DIR [--resolution R --max-images N \
      --batch-size B --fid-method sqrtm|eigh --lpips-weights FILE ...]

Without a tokenizer, FID (plus PSNR/SSIM/bytes for codecs) between sources:

  python -m jaxtok.eval --data bundled --compare jpeg:75 --out DIR      # vs its JPEG copies
  python -m jaxtok.eval --data folder:A --reference folder:B --out DIR  # two sources
  python -m jaxtok.eval --data folder:A --reference-stats ref.npz --out DIR
  python -m jaxtok.eval --data folder:A --save-stats a.npz --out DIR    # mu/sigma file

Rate-distortion (bytes per image against PSNR/SSIM, tokenizer vs JPEG/WebP/AVIF, in real
`.jtok` files) is `python -m jaxtok.codec rd --checkpoint DIR --data SOURCE --out DIR`.

SOURCE is what `jaxtok.data.eval_images` takes: `bundled` (the held-out photos),
`folder:PATH`, `tfds:NAME[:split]`. `--tiles T` loads each image at T*R and cuts it into
T x T tiles of R x R, to get more (distinct) images out of a few photos.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok import api, data
from jaxtok import metrics as metrics_lib
from jaxtok.eval import evaluators, fid
from jaxtok.eval.images import CODECS, codec_images
from jaxtok.tokenizers import interface

_LOG = logging.getLogger("jaxtok.eval")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxtok.eval", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", help="checkpoint directory or variant (e.g. one_d_piece:tiny)")
  p.add_argument("--data", required=True, help="bundled | folder:PATH | tfds:NAME[:split]")
  p.add_argument("--out", required=True, help="output directory (metrics.json)")
  p.add_argument("--metrics", default=None,
                 help="comma list of fid,psnr,ssim,mse,l1,lpips,codebook (default: "
                      "psnr,ssim,codebook with a tokenizer, fid without)")
  p.add_argument("--resolution", type=int, default=None,
                 help="image side (default: the tokenizer's, else 256)")
  p.add_argument("--max-images", type=int, default=None)
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--tiles", type=int, default=1, help="T: T x T tiles per loaded image")
  p.add_argument("--reference", help="second source for FID (no tokenizer)")
  p.add_argument("--reference-stats", help=".npz with mu/sigma to compare against")
  p.add_argument("--compare", help="CODEC:QUALITY, e.g. jpeg:75 or webp:50 (no tokenizer)")
  p.add_argument("--save-stats", help="write the data's Inception mu/sigma to this .npz")
  p.add_argument("--fid-method", default="sqrtm", choices=("sqrtm", "eigh"),
                 help="sqrtm: pytorch-fid numerics; eigh: same trace, much faster")
  p.add_argument("--lpips-weights", nargs="+", default=None)
  p.add_argument("--prefix", type=int, default=None, help="decode only the first N tokens")
  return p


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
  p = _parser()
  args = p.parse_args(argv)
  if args.tiles < 1:
    p.error(f"--tiles: expected >= 1, got {args.tiles}")
  if args.checkpoint and (args.reference or args.compare):
    p.error("--reference/--compare compare image sources; drop --checkpoint")
  return args


def _compare_sources(args, images: np.ndarray, metrics: list[str]) -> dict:
  results: dict[str, Any] = {}
  other = None
  if args.compare:
    codec, _, quality = args.compare.partition(":")
    if codec not in CODECS or not quality.isdigit():
      raise ValueError(f"--compare: expected CODEC:QUALITY with CODEC in {sorted(CODECS)}, "
                       f"got {args.compare!r}")
    other, nbytes = codec_images(images, codec, int(quality))
    results.update({f"{codec}/bytes_per_image": nbytes,
                    f"{codec}/psnr": float(np.mean(metrics_lib.psnr(images, other))),
                    f"{codec}/ssim": float(np.mean(metrics_lib.ssim(images, other)))})
  elif args.reference:
    other = data.eval_tiles(args.reference, images.shape[1], max_images=args.max_images,
                        tiles=args.tiles)
  if "fid" in metrics:
    stats = fid.compute_statistics(images, batch_size=args.batch_size)
    if args.save_stats:
      fid.save_statistics(args.save_stats, *stats)
    for name, ref in (("fid", other), ("fid_vs_reference_stats", args.reference_stats)):
      if ref is not None:
        results[name] = fid.compute_fid(stats, ref, batch_size=args.batch_size,
                                        method=args.fid_method)
    results["fid/num_images"] = int(images.shape[0])
  return results


# CLI flag -> (evaluator option, value from the flag's string). A flag left at its default is
# not passed, so the evaluators' own defaults apply and a flag the chosen metrics do not take
# is reported by `build_evaluators` instead of being ignored.
_FLAG_OPTIONS = {
    "prefix": ("prefix", lambda v: v),
    "fid_method": ("method", lambda v: v),
    "lpips_weights": ("lpips_weights", lambda v: v),
    "reference_stats": ("reference_stats", lambda v: v),
}


def _evaluator_options(args: argparse.Namespace) -> dict:
  """Keyword options for `evaluators.build_evaluators` from the flags that were given."""
  parser = _parser()
  options: dict[str, Any] = {"batch_size": args.batch_size}
  for flag, (option, convert) in _FLAG_OPTIONS.items():
    value = getattr(args, flag)
    if value != parser.get_default(flag):
      options[option] = convert(value)
  return options


def evaluate(argv: Sequence[str] | None = None) -> dict:
  """Runs the CLI on `argv`; returns the record written to `metrics.json`."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  args = _parse(argv)
  if "rd" in [m.strip() for m in (args.metrics or "").split(",")]:
    raise ValueError("--metrics rd: rate-distortion is its own command, `python -m "
                     "jaxtok.codec rd --checkpoint DIR --data SOURCE --out DIR` (real .jtok "
                     "file sizes, JPEG/WebP/AVIF curves)")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  t0 = time.time()
  tok = None
  if args.checkpoint:
    tok = api.load(args.checkpoint)
  resolution = args.resolution or (tok.image_size if tok is not None else 256)
  if tok is not None and resolution != tok.image_size:
    raise ValueError(f"--resolution: the tokenizer takes {tok.image_size}x{tok.image_size} "
                     f"images, got {resolution}")
  images = data.eval_tiles(args.data, resolution, max_images=args.max_images, tiles=args.tiles)
  _LOG.info("%d images %dx%d from %s", len(images), resolution, resolution, args.data)
  default = "psnr,ssim,codebook" if tok is not None else "fid"
  metrics = [m.strip() for m in (args.metrics or default).split(",") if m.strip()]
  if tok is None:
    if not (args.compare or args.reference or args.reference_stats or args.save_stats) and (
        "fid" in metrics):
      raise ValueError("--metrics fid without --checkpoint needs --compare, --reference, "
                       "--reference-stats or --save-stats")
    unsupported = sorted(set(metrics) - {"fid"})
    if unsupported:
      raise ValueError(f"--metrics: {unsupported} need a --checkpoint")
    results = _compare_sources(args, images, metrics)
  else:
    results = {}
    for ev in evaluators.build_evaluators(metrics, **_evaluator_options(args)):
      t = time.time()
      for name, value in ev.run(tok, images):
        results[f"{ev.name}/{name}"] = value
      _LOG.info("%s done in %.1fs", ev.name, time.time() - t)
    if args.save_stats:
      fid.save_statistics(args.save_stats, *fid.compute_statistics(
          images, batch_size=args.batch_size))
  record = {"args": vars(args), "num_images": int(len(images)), "resolution": resolution,
            "seconds": round(time.time() - t0, 2), "metrics": interface.jsonable(results)}
  (out / "metrics.json").write_text(json.dumps(record, indent=2))
  scalars = {k: v for k, v in record["metrics"].items() if isinstance(v, (int, float))}
  print(json.dumps(scalars, indent=1))
  return record


def main(argv: Sequence[str] | None = None) -> int:
  """Console entry point (`jaxtok-eval`): exit status 0, or 2 on bad arguments/data."""
  try:
    evaluate(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
