r"""`.jtok` command line: compress / decompress image files, inspect, fit a prior, plot R-D.

  python -m jaxtok.codec compress --checkpoint CKPT photos/ a.png --out out/ \
      [--prior uniform|marginal|FILE] [--target psnr:25 | bytes:120 | --num-tokens L]
  python -m jaxtok.codec decompress --checkpoint CKPT out/ --out recon/ [--prior ...]
  python -m jaxtok.codec info out/x.jtok
  python -m jaxtok.codec fit-prior --checkpoint CKPT [--data bundled --num-images 4096]
  python -m jaxtok.codec rd --checkpoint CKPT --data bundled --out rd/ [--tiles 4 \
      --lengths 1,4,16 --targets auto --qualities 30,80]

Outputs mirror the inputs: a folder's files keep their path below it (`photos/sub/a.png` ->
`out/sub/a.jtok`), a file named alone lands in `--out`. Two inputs that would write the same
output (`a.png` and `a.jpg`, or `j1/b.jtok` and `j2/b.jtok`) are refused before any work, and
an existing output is only replaced with `--overwrite`. An image that cannot be read is
skipped with its reason (listed under "skipped"; exit status 1).

Images are center-cropped and resized to the tokenizer's size (as `jaxtok.data.eval_images`).
`--prior marginal` means `CKPT/prior_marginal.npz` (written by `fit-prior`, counted on the
*training* stream of `--data`: for `bundled`, never the held-out photos; per position and,
for FSQ ids, per channel digit: see `jaxtok.codec.priors`). `rd` (the one rate-distortion
command of jaxtok, `jaxtok.codec.rd`) writes `rate_distortion.{json,png}` (PSNR and SSIM
against real bytes per image: fixed and adaptive length in uniform and marginal `.jtok` files,
JPEG, WebP, AVIF where Pillow has it) and prints the figures: marginal vs uniform mean bytes,
and adaptive vs the shortest fixed length that reaches the same mean PSNR.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from jaxtok import api, data
from jaxtok.codec import format as fmt
from jaxtok.codec import jtok, priors
from jaxtok.codec.rd import measure

_LOG = logging.getLogger("jaxtok.codec")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive int, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive int, got {value}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
  if not np.isfinite(value) or value <= 0:
    raise argparse.ArgumentTypeError(f"expected a finite positive number, got {text!r}")
  return value


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxtok.codec", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("compress", help="image files/folders -> .jtok files")
  c.add_argument("--checkpoint", required=True)
  c.add_argument("inputs", nargs="+")
  c.add_argument("--out", required=True)
  c.add_argument("--prior", default="uniform", help="uniform | marginal | prior file")
  c.add_argument("--target", default=None,
                 help="METRIC:VALUE, e.g. psnr:25 (shortest prefix reaching it), or bytes:B "
                      "(most PSNR at a mean of B bytes per file) / lambda:L (adaptive)")
  c.add_argument("--num-tokens", type=_positive_int, default=None, help="fixed prefix length")
  c.add_argument("--lpips-weights", nargs="+", default=None)
  c.add_argument("--batch-size", type=_positive_int, default=32)
  c.add_argument("--overwrite", action="store_true", help="replace existing .jtok files")
  d = sub.add_parser("decompress", help=".jtok files/folders -> PNG files")
  d.add_argument("--checkpoint", required=True)
  d.add_argument("inputs", nargs="+")
  d.add_argument("--out", required=True)
  d.add_argument("--prior", default=None, help="marginal | prior file (for marginal blobs)")
  d.add_argument("--batch-size", type=_positive_int, default=32)
  d.add_argument("--overwrite", action="store_true", help="replace existing .png files")
  i = sub.add_parser("info", help="print the header of .jtok files")
  i.add_argument("inputs", nargs="+")
  f = sub.add_parser("fit-prior", help="count per-position code (FSQ: per-channel digit) "
                                        "frequencies")
  f.add_argument("--checkpoint", required=True)
  f.add_argument("--data", default="bundled", help="training source (its training stream)")
  f.add_argument("--num-images", type=_positive_int, default=4096)
  f.add_argument("--batch-size", type=_positive_int, default=64)
  f.add_argument("--alpha", type=_positive_float, default=0.5)
  f.add_argument("--out", default=None, help=f"default CKPT/{priors.MARGINAL_FILE}")
  r = sub.add_parser("rd", help="rate-distortion plot with real file sizes")
  r.add_argument("--checkpoint", required=True)
  r.add_argument("--data", default="bundled", help="evaluation images (bundled = held out)")
  r.add_argument("--out", required=True)
  r.add_argument("--tiles", type=_positive_int, default=1,
                 help="T: T x T tiles per loaded image")
  r.add_argument("--max-images", type=_positive_int, default=None)
  r.add_argument("--prior", default="marginal",
                 help="marginal (= CKPT/prior_marginal.npz) | prior file; fitted on "
                      "--prior-data and written there first if missing")
  r.add_argument("--prior-data", default="bundled", help="training source for a new prior")
  r.add_argument("--prior-images", type=_positive_int, default=4096)
  r.add_argument("--lengths", default="all", help="'all' or comma list of prefix lengths")
  r.add_argument("--targets", default="auto", help="'auto' or comma list of PSNR targets")
  r.add_argument("--qualities", default=None, help="comma list of JPEG/WebP/AVIF qualities")
  r.add_argument("--batch-size", type=_positive_int, default=32)
  return p


def _files(inputs: Sequence[str], suffixes: tuple[str, ...]) -> list[tuple[Path, Path]]:
  """(file, its path relative to the output folder without suffix) for every input file."""
  out = []
  for name in inputs:
    path = Path(name)
    if path.is_dir():
      out += [(q, q.relative_to(path).with_suffix(""))
              for q in sorted(path.rglob("*")) if q.is_file() and q.suffix.lower() in suffixes]
    elif path.is_file():
      out.append((path, Path(path.stem)))
    else:
      raise ValueError(f"inputs: {name!r} is neither a file nor a directory")
  if not out:
    raise ValueError(f"inputs: no {'/'.join(suffixes)} files in {list(inputs)}")
  return out


def _destinations(files: list[tuple[Path, Path]], out: Path, suffix: str,
                  overwrite: bool) -> list[Path]:
  """The output path of each input; refuses two inputs with one output, and existing outputs
  unless `overwrite`."""
  dests, seen = [], {}
  for src, rel in files:
    dest = out / rel.with_name(rel.name + suffix)
    key = os.path.normcase(os.path.abspath(dest))
    if key in seen:
      raise ValueError(f"inputs: {str(seen[key])!r} and {str(src)!r} would both be written to "
                       f"{str(dest)!r}; rename one or process them into different --out "
                       f"folders")
    seen[key] = src
    dests.append(dest)
  if not overwrite:
    existing = [str(d) for d in dests if d.exists()]
    if existing:
      raise ValueError(f"--out: {len(existing)} output file(s) exist already (e.g. "
                       f"{existing[0]!r}); pass --overwrite to replace them")
  return dests


def _read_image(path: Path, size: int) -> np.ndarray:
  try:
    with Image.open(path) as im:
      pixels = np.asarray(im.convert("RGB"))
  except (OSError, ValueError, Image.DecompressionBombError) as e:  # Unreadable: skipped.
    raise ValueError(f"{path}: not a readable image ({type(e).__name__}: {e})") from e
  return data.center_crop_resize(pixels, size)


def _prior_arg(value: str | None, checkpoint: str) -> str | None:
  if value == "marginal":
    return str(Path(checkpoint) / priors.MARGINAL_FILE)
  return value


def _target(value: str | None):
  if value is None:
    return None
  metric, _, number = value.partition(":")
  try:
    return metric, float(number)
  except ValueError:
    raise ValueError(f"--target: expected METRIC:VALUE such as psnr:25, got {value!r}") from None


def _fit_prior(tok, source: str, num_images: int, batch_size: int, alpha: float):
  cfg = data.DataConfig(source=source, resolution=tok.image_size)
  it = data.create_train_iterator(cfg, batch_size=batch_size, process_index=0,
                                  process_count=1)
  return priors.fit_marginal(tok, (b["image"] for b in it), alpha=alpha,
                             max_images=num_images)


def run(argv: Sequence[str] | None = None) -> dict:
  """Runs one command; returns what it printed (as a dict)."""
  args = _parser().parse_args(argv)
  if args.command == "info":
    rows = []
    for path, _ in _files(args.inputs, (fmt.SUFFIX,)):
      h = jtok.read_header(path.read_bytes(), str(path))
      rows.append({"file": str(path), "bytes": path.stat().st_size, **h.as_dict()})
    result = {"files": rows}
    print(json.dumps(result, indent=1))
    return result
  tok = api.load(args.checkpoint)
  if args.command == "compress":
    files = _files(args.inputs, data.IMAGE_EXTENSIONS)
    dests = _destinations(files, Path(args.out), fmt.SUFFIX, args.overwrite)
    images, kept, skipped = [], [], []
    for (p, _), dest in zip(files, dests):
      try:
        images.append(_read_image(p, tok.image_size))
        kept.append(dest)
      except ValueError as e:
        _LOG.warning("skipping %s", e)
        skipped.append({"file": str(p), "error": str(e)})
    if not images:
      raise ValueError(f"inputs: none of the {len(files)} images could be read: "
                       f"{skipped[0]['error']}")
    blobs = jtok.compress(tok, np.stack(images), prior=_prior_arg(args.prior, args.checkpoint),
                          num_tokens=args.num_tokens, target=_target(args.target),
                          lpips_weights=args.lpips_weights, batch_size=args.batch_size)
    rows = []
    for dest, b in zip(kept, blobs):
      dest.parent.mkdir(parents=True, exist_ok=True)
      jtok.write_atomic(dest, b)
      rows.append({"file": str(dest), "bytes": len(b),
                   "num_tokens": jtok.read_header(b).num_tokens})
    result = {"files": rows, "mean_bytes": float(np.mean([len(b) for b in blobs]))}
    if skipped:
      result["skipped"] = skipped
  elif args.command == "decompress":
    files = _files(args.inputs, (fmt.SUFFIX,))
    dests = _destinations(files, Path(args.out), ".png", args.overwrite)
    blobs = [p.read_bytes() for p, _ in files]
    images = jtok.decompress(tok, blobs, prior=_prior_arg(args.prior, args.checkpoint),
                             batch_size=args.batch_size, names=[str(p) for p, _ in files])
    rows = []
    for dest, im in zip(dests, images):
      dest.parent.mkdir(parents=True, exist_ok=True)
      tmp = dest.with_name(f".{dest.name}.tmp")
      Image.fromarray(np.round(im * 255).astype(np.uint8)).save(tmp, format="PNG")
      tmp.replace(dest)
      rows.append(str(dest))
    result = {"files": rows}
  elif args.command == "fit-prior":
    prior = _fit_prior(tok, args.data, args.num_images, args.batch_size, args.alpha)
    dest = prior.save(args.out or Path(args.checkpoint) / priors.MARGINAL_FILE)
    result = {"file": str(dest), "prior": repr(prior)}
  else:  # rd
    prior_path = Path(_prior_arg(args.prior, args.checkpoint))
    if not prior_path.is_file():
      _LOG.info("no %s: fitting one on %d training images of %s", prior_path,
                args.prior_images, args.prior_data)
      _fit_prior(tok, args.prior_data, args.prior_images, args.batch_size, 0.5).save(
          prior_path)
    targets = "auto" if args.targets == "auto" else [float(t) for t in args.targets.split(",")]
    qualities = tuple(int(q) for q in args.qualities.split(",")) if args.qualities else None
    try:
      lengths = None if args.lengths == "all" else [int(k) for k in args.lengths.split(",")]
    except ValueError:
      raise ValueError(f"--lengths: expected 'all' or a comma list of prefix lengths, got "
                       f"{args.lengths!r}") from None
    result = measure(tok, args.data, args.out, prior=prior_path, tiles=args.tiles,
                     max_images=args.max_images, lengths=lengths, targets=targets,
                     qualities=qualities, batch_size=args.batch_size)
  print(json.dumps(result, indent=1))
  return result


def main(argv: Sequence[str] | None = None) -> int:
  """Exit status 0; 1 when some inputs were skipped (unreadable); 2 on bad arguments, data
  or files."""
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  try:
    result = run(argv)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 1 if result.get("skipped") else 0


if __name__ == "__main__":
  sys.exit(main())
