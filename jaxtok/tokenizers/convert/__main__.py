"""CLI: official PyTorch checkpoints -> a jaxtok checkpoint directory.

    python -m jaxtok.tokenizers.convert titok --checkpoint model.safetensors \
        --config config.json [--maskgit-vqgan maskgit-vqgan-imagenet-f16-256.bin] --out DIR

    python -m jaxtok.tokenizers.convert flextok --checkpoint model.safetensors \
        [--config config.json] [--vae-scaling-factor S] --out DIR

    python -m jaxtok.tokenizers.convert fqgan --checkpoint fqgan.pt --variant dual-16 --out DIR

    python -m jaxtok.tokenizers.convert vae --diffusers DIR [--image-size 256] --out OUT

(also installed as `jaxtok-convert`). Prints a JSON summary of the written checkpoint.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path
from typing import Any

from jaxtok.tokenizers.convert import convert_official
from jaxtok.tokenizers.titok.official import parse_heads

# Config fields each family's JSON summary shows (beside out, family, files, version).
SUMMARY_FIELDS = {
    "titok": {"image_size": "image_size", "num_tokens": "num_latent_tokens",
              "codebook_size": "codebook_size"},
    "fqgan": {"image_size": "image_size", "branches": "branches",
              "codebook_size": "codebook_size"},
    "flextok": {"front_end": "front_end", "input_size": "input_size",
                "num_tokens": "num_registers", "levels": "levels"},
    "vae": {"image_size": "image_size", "latent_channels": "latent_channels",
            "scaling_factor": "scaling_factor"},
}


def _add_output_args(parser: argparse.ArgumentParser) -> None:
  """`--out` and `--no-overwrite`, which every family's subcommand takes."""
  parser.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
  parser.add_argument("--no-overwrite", action="store_true",
                      help="fail if --out already holds a jaxtok checkpoint")


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m jaxtok.tokenizers.convert",
                              description=__doc__.splitlines()[0])
  sub = p.add_subparsers(dest="family", required=True)
  t = sub.add_parser("titok", help="TiTok (1d-tokenizer) or One-D-Piece checkpoints")
  t.add_argument("--checkpoint", required=True, type=Path,
                 help="model.safetensors, pytorch_model.bin / .pt (torch zip), or fixture .npz")
  t.add_argument("--config", type=Path, default=None,
                 help="official config.json or .yaml (default: config.json beside --checkpoint)")
  t.add_argument("--maskgit-vqgan", type=Path, default=None,
                 help="MaskGIT VQGAN .bin supplying pixel_decoder / pixel_quantize weights "
                      "missing from --checkpoint (legacy two-stage models)")
  t.add_argument("--maskgit-override", action="store_true",
                 help="take pixel decoder weights from --maskgit-vqgan even where the "
                      "checkpoint has its own")
  _add_output_args(t)
  t.add_argument("--one-d-piece", dest="one_d_piece", action="store_true", default=None,
                 help="force the One-D-Piece family (default: detect from the config)")
  t.add_argument("--no-one-d-piece", dest="one_d_piece", action="store_false")
  t.add_argument("--heads", default=None,
                 help="attention heads of ViT sizes the library does not know (their width "
                      "and depth are read from the checkpoint): N, or name=N,name=N")
  t.add_argument("--use-torch", action="store_true",
                 help="read .bin/.pt with torch.load instead of the torch-free reader")
  fq = sub.add_parser("fqgan", help="FQGAN-Dual / -Triple (showlab/FQGAN) checkpoints")
  fq.add_argument("--checkpoint", required=True, type=Path,
                  help="released .pt ({'model': state_dict}), .safetensors, or fixture .npz")
  fq.add_argument("--variant", default=None,
                  help="jaxtok FQGAN variant: dual-16, triple-16, dual-8, triple-8, ...")
  fq.add_argument("--config", type=Path, default=None,
                  help="instead of --variant: JSON with the official model_args and sizes")
  _add_output_args(fq)
  fq.add_argument("--use-torch", action="store_true",
                  help="read .pt with torch.load instead of the torch-free reader")
  f = sub.add_parser("flextok", help="FlexTok (apple/ml-flextok) releases, VAE included: "
                                      "the result tokenizes images (front_end 'vae'); a "
                                      "checkpoint without vae.vae.* weights gives a "
                                      "front_end 'latent' model over VAE latents")
  f.add_argument("--checkpoint", required=True, type=Path, help="model.safetensors")
  f.add_argument("--config", type=Path, default=None,
                 help="release config.json (default: beside --checkpoint, else the "
                      "safetensors __metadata__)")
  f.add_argument("--vae-scaling-factor", type=float, default=None,
                 help="the VAE's latent scaling factor, needed when the release's vae node "
                      "sets scaling_factor null (the official code reads it from the "
                      "hf_hub_path model's config, which is not read here)")
  _add_output_args(f)
  v = sub.add_parser("vae", help="diffusers AutoencoderKL directories (save_pretrained)")
  v.add_argument("--diffusers", required=True, type=Path,
                 help="directory with config.json + diffusion_pytorch_model.safetensors")
  v.add_argument("--image-size", type=int, default=None,
                 help="tokenizer resolution (default: the config's sample_size)")
  _add_output_args(v)
  return p


def _report(out: Path, fields: dict[str, str]) -> int:
  """Prints the JSON summary of the checkpoint written to `out`; returns exit status 0."""
  meta = json.loads((out / "config.json").read_text())
  cfg = meta["config"]
  print(json.dumps({"out": str(out), "family": meta["family"],
                    **{name: cfg[key] for name, key in fields.items()},
                    "files": sorted(p.name for p in out.iterdir()),
                    "jaxtok_version": importlib.metadata.version("jaxtok")}))
  return 0


def _options(args) -> dict[str, Any]:
  """The family converter's options from the parsed command line."""
  overwrite = not args.no_overwrite
  if args.family == "fqgan":
    config = json.loads(Path(args.config).read_text()) if args.config is not None else None
    return dict(variant=args.variant, config=config, use_torch=bool(args.use_torch),
                overwrite=overwrite)
  if args.family == "vae":
    return dict(image_size=args.image_size, overwrite=overwrite)
  if args.family == "flextok":
    return dict(config=args.config, vae_scaling_factor=args.vae_scaling_factor,
                overwrite=overwrite)
  return dict(config=args.config, maskgit_vqgan=args.maskgit_vqgan,
              maskgit_override=args.maskgit_override, one_d_piece=args.one_d_piece,
              heads=parse_heads(args.heads), use_torch=bool(args.use_torch), overwrite=overwrite)


def _convert(args) -> Path:
  """Runs the family's converter (`convert_official`); returns the output directory."""
  source = args.diffusers if args.family == "vae" else args.checkpoint
  return convert_official(args.family, source, args.out, **_options(args))


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    out = _convert(args)
  except (ValueError, OSError, json.JSONDecodeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return _report(out, SUMMARY_FIELDS[args.family])


if __name__ == "__main__":
  sys.exit(main())
