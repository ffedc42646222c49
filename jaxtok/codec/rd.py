"""Rate–distortion of a tokenizer in real `.jtok` bytes against JPEG / WebP / AVIF files.

`measure` runs `jaxtok.eval.rate_distortion` with two `.jtok` coders (uniform and marginal
prior), writes `rate_distortion.json` / `.png`, and returns the figures that matter:

- `marginal_vs_uniform`: mean file bytes per image of both priors at the full length K (and
  summed over every fixed length);
- `adaptive_vs_fixed`: for each PSNR target, adaptive length's mean bytes and mean PSNR beside
  the shortest fixed length reaching that mean PSNR (both in marginal `.jtok` files).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxtok import data
from jaxtok.codec import jtok, priors
from jaxtok.eval import rate_distortion


def coders(tok, prior: Any) -> dict[str, Any]:
  """`{"uniform": fn, "marginal": fn}`: `fn(ids, lengths) -> .jtok blobs` for the R-D curves."""
  marginal = priors.resolve(tok, prior)
  return {
      "uniform": lambda ids, lengths: jtok.compress_tokens(tok, ids, lengths=lengths),
      "marginal": lambda ids, lengths: jtok.compress_tokens(tok, ids, lengths=lengths,
                                                            prior=marginal),
  }


def measure(tok, source: str, out_dir: str | os.PathLike, *, prior: Any,
            tiles: int = 1, max_images: int | None = None,
            targets: Sequence[float] | str = "auto",
            qualities: Sequence[int] | None = None, batch_size: int = 32) -> dict[str, Any]:
  """R-D curves of `tok` on `source` (see module docstring); writes JSON + PNG in `out_dir`."""
  images = data.eval_tiles(source, tok.image_size, max_images=max_images, tiles=tiles)
  result = rate_distortion.rate_distortion(
      tok, images, codecs=rate_distortion.DEFAULT_CODECS,
      qualities=qualities or rate_distortion.DEFAULT_QUALITIES, batch_size=batch_size,
      coders=coders(tok, prior), adaptive_targets=targets if tok.supports_prefix else None)
  out = Path(out_dir)
  rate_distortion.write_json(result, out / "rate_distortion.json")
  rate_distortion.plot(result, out / "rate_distortion.png", tokenizer_label=tok.family,
                       title=f"{tok.family} vs codecs, {len(images)} images from {source} "
                             f"({tok.image_size}x{tok.image_size}), real file bytes")
  curves = result["curves"]
  full = {c: curves[f"tokenizer/{c}"][-1] for c in ("uniform", "marginal")}
  figures: dict[str, Any] = {
      "num_images": len(images), "source": source, "tiles": tiles,
      "marginal_vs_uniform": {
          "tokens": full["uniform"]["tokens"],
          "uniform_bytes": full["uniform"]["bytes_per_image"],
          "marginal_bytes": full["marginal"]["bytes_per_image"],
          "uniform_bytes_all_lengths": float(sum(p["bytes_per_image"]
                                                 for p in curves["tokenizer/uniform"])),
          "marginal_bytes_all_lengths": float(sum(p["bytes_per_image"]
                                                  for p in curves["tokenizer/marginal"])),
          "psnr": full["uniform"]["psnr"]},
      "codecs_smallest": {c: curves[c][0] for c in rate_distortion.DEFAULT_CODECS},
      "files": [str(out / "rate_distortion.json"), str(out / "rate_distortion.png")],
  }
  if tok.supports_prefix:
    figures["adaptive_vs_fixed"] = rate_distortion.adaptive_vs_fixed(
        result, "tokenizer/marginal", "adaptive/marginal")
  rate_distortion.write_json(figures, out / "figures.json")
  return figures


__all__ = ["coders", "measure"]
