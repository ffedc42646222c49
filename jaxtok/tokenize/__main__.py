"""`python -m jaxtok.tokenize --checkpoint C --data SOURCE --out DIR`: token shards.

C is a checkpoint directory for `jaxtok.load` or a variant name (`titok:S-128`: random init).
SOURCE is `bundled`, `folder:PATH` or `tfds:NAME[:split]`. Rerunning the same command resumes:
finished shards are skipped. Multi-host: run the same line on every host (the multi-process
settings come from the environment, see `jaxtok.parallel.distributed`). Prints a JSON summary
line (images/s among it) per host.
"""
from __future__ import annotations

import argparse
import json
import sys

from jaxtok.parallel import distributed
from jaxtok.tokenize.writer import tokenize


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxtok.tokenize", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--checkpoint", required=True,
                 help="checkpoint directory, or a variant name like titok:S-128 (random init)")
  p.add_argument("--data", required=True,
                 help="bundled | folder:PATH | tfds:NAME[:split]")
  p.add_argument("--out", required=True, help="output directory (resumed if it exists)")
  p.add_argument("--batch_size", type=int, default=32,
                 help="images per encode call on each host; a multiple of its device count")
  p.add_argument("--shard_size", type=int, default=4096, help="records per shard file")
  p.add_argument("--folder_labels", action="store_true",
                 help="label folder images by their class sub-directory (PATH/<class>/...)")
  p.add_argument("--tfds_data_dir", default=None)
  p.add_argument("--image_key", default="image", help="image feature of tfds examples")
  p.add_argument("--read_threads", type=int, default=4)
  p.add_argument("--seed", type=int, default=0, help="init seed of a variant name")
  p.add_argument("--no_progress", action="store_true", help="no progress bar")
  return p


def main(argv: list[str] | None = None) -> dict:
  args = _parser().parse_args(argv)
  distributed.initialize()  # Before anything touches a JAX backend; no-op on one host.
  try:
    summary = tokenize(args.checkpoint, args.data, args.out, batch_size=args.batch_size,
                       shard_size=args.shard_size, folder_labels=args.folder_labels,
                       tfds_data_dir=args.tfds_data_dir, image_key=args.image_key,
                       read_threads=args.read_threads, seed=args.seed,
                       progress=not args.no_progress)
  except ValueError as e:
    sys.exit(f"python -m jaxtok.tokenize: error: {e}")
  print("[jaxtok.tokenize] " + json.dumps(summary), flush=True)
  return summary


if __name__ == "__main__":
  main()
