"""Rate–distortion: reconstruction quality against bytes per image, tokenizer vs JPEG/WebP.

The comparison One-D-Piece (arXiv 2501.10064) makes. For a tokenizer the rate of a prefix of
K tokens is `K · F · log2(V) / 8` bytes per image (V = codebook size, F = ids per token, 1 unless
the quantizer is factorized): the cost of the ids with a fixed-length code, no entropy coding.
Every usable K is measured: all of 1..K_max when the tokenizer decodes prefixes
(`tokenizer.supports_prefix`), else only K_max. The same images are compressed with Pillow's
JPEG and WebP encoders over a quality sweep; their rate is the full file size (headers
included, as a stored image costs), and their quality is measured on the decoded file.

Quality per point: mean per-image PSNR (dB) and SSIM (`recon.ssim`, Gaussian window) over
the images, plus rFID when the set has at least `MIN_FID_IMAGES` images. The threshold is
2048 because the 2048x2048 feature covariance is singular below 2049 samples and FID's
small-sample bias dominates differences between points well before that.

Real file sizes for the tokenizer: pass `coders` (`{name: fn(ids, lengths) -> blobs}`, e.g.
`.jtok` writers from `jaxtok.codec`, which sits above eval): each coder gets a fixed-length curve
`tokenizer/<name>` and an adaptive one `adaptive/<name>`, rated by the mean blob size. Without
coders the fixed-length rate above is used (curves `tokenizer`, `adaptive`).

Adaptive length (ordered tokenizers): for each PSNR target T in `adaptive_targets`, every image
keeps the shortest prefix reaching T (`Tokenizer.encode_adaptive`); the point is the mean bytes
against the mean quality of those reconstructions. `"auto"` takes as targets the fixed curve's
mean PSNR at a few lengths. `adaptive_vs_fixed` then pairs each adaptive point with the shortest
fixed length whose mean PSNR is at least the adaptive point's.

Outputs: a JSON with every curve (`write_json`) and one PNG with all curves (`plot`).
"""
from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure
from PIL import Image, features

from jaxtok.eval import fid, recon
from jaxtok.nets import inception

MIN_FID_IMAGES = 2048
DEFAULT_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
CODECS = {"jpeg": "JPEG", "webp": "WEBP"}
if features.check("avif"):  # Pillow >= 11.2 built with libavif.
  CODECS["avif"] = "AVIF"
DEFAULT_CODECS = tuple(CODECS)


def token_bytes(num_tokens: int, codebook_size: int, ids_per_token: int = 1) -> float:
  """Bytes per image of `num_tokens` ids from a `codebook_size` codebook (fixed-length)."""
  return num_tokens * ids_per_token * math.log2(codebook_size) / 8.0


def usable_lengths(tokenizer) -> list[int]:
  """All prefix lengths 1..K for prefix-capable tokenizers, else [K]."""
  k = int(tokenizer.num_tokens)
  return list(range(1, k + 1)) if getattr(tokenizer, "supports_prefix", False) else [k]


_quality_fns = jax.jit(lambda a, b: (recon.psnr(a, b), recon.ssim(a, b)))


def _quality(real: np.ndarray, fake: np.ndarray, batch_size: int) -> tuple[float, float]:
  psnrs, ssims = [], []
  for s in range(0, len(real), batch_size):
    p, q = _quality_fns(real[s:s + batch_size], np.asarray(fake[s:s + batch_size], np.float32))
    psnrs.append(np.asarray(p, np.float64))
    ssims.append(np.asarray(q, np.float64))
  return float(np.concatenate(psnrs).mean()), float(np.concatenate(ssims).mean())


def _fid(real_stats, fake: np.ndarray, extractor, batch_size, method) -> float:
  fake_stats = fid.accumulate(fake, extractor=extractor, batch_size=batch_size).mean_cov()
  return fid.frechet_distance(*real_stats, *fake_stats, method=method)


def codec_roundtrip(image: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, int]:
  """Encodes one uint8 `[H, W, 3]` image with Pillow; returns (decoded uint8, file bytes)."""
  if codec not in CODECS:
    raise ValueError(f"codec: expected one of {sorted(CODECS)}, got {codec!r}")
  buf = io.BytesIO()
  Image.fromarray(image).save(buf, format=CODECS[codec], quality=int(quality))
  size = buf.tell()
  buf.seek(0)
  return np.asarray(Image.open(buf).convert("RGB")), size


def codec_images(images: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, float]:
  """`[N, H, W, 3]` uint8 through a codec: (decoded images, mean bytes per image)."""
  out, sizes = zip(*(codec_roundtrip(im, codec, quality) for im in images))
  return np.stack(out), float(np.mean(sizes))


def _decode_lengths(tokenizer, ids: np.ndarray, lengths: np.ndarray,
                    batch_size: int) -> np.ndarray:
  """Image i decoded from `ids[i, :lengths[i]]`, images of one length batched together."""
  out = None
  for n in np.unique(lengths):
    rows = np.flatnonzero(lengths == n)
    for s in range(0, len(rows), batch_size):
      sel = rows[s:s + batch_size]
      rec = tokenizer.decode(ids[sel, :int(n)])
      if out is None:
        out = np.zeros((len(ids),) + rec.shape[1:], np.float32)
      out[sel] = rec
  return out


def auto_targets(fixed: Sequence[dict], num: int = 6) -> list[float]:
  """PSNR targets for the adaptive curve: the fixed curve's PSNR at `num` spread lengths."""
  k = max(p["tokens"] for p in fixed)
  picks = set(np.unique(np.round(np.geomspace(1, k, num)).astype(int)).tolist())
  return [round(p["psnr"], 2) for p in fixed if p["tokens"] in picks]


def rate_distortion(tokenizer, images: np.ndarray, *, lengths: Sequence[int] | None = None,
                    codecs: Sequence[str] = ("jpeg", "webp"),
                    qualities: Sequence[int] = DEFAULT_QUALITIES, batch_size: int = 32,
                    with_fid: bool | None = None, extractor=None,
                    fid_method: str = "sqrtm", coders: dict[str, Any] | None = None,
                    adaptive_targets: Sequence[float] | str | None = None
                    ) -> dict[str, Any]:
  """Every curve for `images` (uint8 `[N, R, R, 3]`, R = the tokenizer's image size).

  Args:
    tokenizer: the Tokenizer interface, or None for codecs only.
    lengths: prefix lengths to measure (default `usable_lengths(tokenizer)`).
    with_fid: add rFID per point; default when N >= MIN_FID_IMAGES.
    coders: `{name: fn(ids [N, L(, F)], lengths [N]) -> N blobs}`: rate = mean blob bytes.
    adaptive_targets: PSNR targets of the adaptive curve, "auto", or None (no adaptive curve;
      needs a prefix tokenizer).

  Returns:
    `{"num_images", "image_size", "min_fid_images", "curves": {name: [point, ...]}}`, each
    point `{"bytes_per_image", "bits_per_pixel", "psnr", "ssim", ["rfid"], "tokens" or
    "quality" (or "target", "mean_tokens" on adaptive curves)}`, sorted by rate.
  """
  images = inception.check_images(images)
  if images.dtype != np.uint8:
    images = fid.to_uint8(images)
  n, h, w, _ = images.shape
  if with_fid is None:
    with_fid = n >= MIN_FID_IMAGES
  real_stats = (fid.accumulate(images, extractor=extractor, batch_size=batch_size).mean_cov()
                if with_fid else None)
  curves: dict[str, list[dict[str, Any]]] = {}

  def point(fake, nbytes, **extra):
    p, s = _quality(images, fake, batch_size)
    pt = {"bytes_per_image": nbytes, "bits_per_pixel": 8 * nbytes / (h * w), "psnr": p,
          "ssim": s, **extra}
    if with_fid:
      pt["rfid"] = _fid(real_stats, fid.to_uint8(fake), extractor, batch_size, fid_method)
    return pt

  if tokenizer is not None:
    ids = np.concatenate([tokenizer.encode(images[s:s + batch_size])
                          for s in range(0, n, batch_size)])
    f = ids.shape[2] if ids.ndim == 3 else 1
    lengths = list(lengths) if lengths is not None else usable_lengths(tokenizer)
    rates = coders or {None: None}

    def nbytes(coder, per_image_lengths):
      if coder is None:
        v = int(tokenizer.codebook_size)
        return float(np.mean([token_bytes(int(m), v, f) for m in per_image_lengths]))
      return float(np.mean([len(b) for b in coder(ids, per_image_lengths)]))

    fixed = {c: [] for c in rates}
    for k in lengths:
      fake = np.concatenate([tokenizer.decode(ids[s:s + batch_size, :k])
                             for s in range(0, n, batch_size)])
      quality = point(fake, 0.0, tokens=int(k))
      for c, coder in rates.items():
        b = nbytes(coder, np.full(n, k))
        fixed[c].append({**quality, "bytes_per_image": b, "bits_per_pixel": 8 * b / (h * w)})
    for c in rates:
      curves["tokenizer" if c is None else f"tokenizer/{c}"] = fixed[c]
    if adaptive_targets is not None:
      if not getattr(tokenizer, "supports_prefix", False):
        raise ValueError("adaptive_targets: adaptive length needs a prefix tokenizer")
      targets = (auto_targets(fixed[next(iter(rates))]) if adaptive_targets == "auto"
                 else [float(t) for t in adaptive_targets])
      ada_pts = {c: [] for c in rates}
      for t in targets:
        ada = tokenizer.encode_adaptive(images, ("psnr", t), ids=ids, batch_size=batch_size)
        fake = _decode_lengths(tokenizer, ids, ada.lengths, batch_size)
        quality = point(fake, 0.0, target=t, mean_tokens=float(ada.lengths.mean()))
        for c, coder in rates.items():
          b = nbytes(coder, ada.lengths)
          ada_pts[c].append({**quality, "bytes_per_image": b, "bits_per_pixel": 8 * b / (h * w)})
      for c in rates:
        curves["adaptive" if c is None else f"adaptive/{c}"] = sorted(
            ada_pts[c], key=lambda p: p["bytes_per_image"])
  for codec in codecs:
    pts = []
    for q in qualities:
      fake, nbytes = codec_images(images, codec, q)
      pts.append(point(fake.astype(np.float32) / 255.0, nbytes, quality=int(q)))
    curves[codec] = sorted(pts, key=lambda p: p["bytes_per_image"])
  return {"num_images": int(n), "image_size": [int(h), int(w)],
          "min_fid_images": MIN_FID_IMAGES, "curves": curves}


def adaptive_vs_fixed(result: dict, fixed: str = "tokenizer", adaptive: str = "adaptive"
                      ) -> list[dict[str, Any]]:
  """Each adaptive point beside the shortest fixed length reaching its mean PSNR.

  Returns `[{"target", "adaptive_psnr", "adaptive_bytes", "adaptive_mean_tokens",
  "fixed_tokens", "fixed_psnr", "fixed_bytes", "saving"}]`, `saving` = 1 - adaptive/fixed
  bytes; the fixed fields are None where no fixed length reaches that PSNR.
  """
  curves = result["curves"]
  fixed_pts = sorted(curves[fixed], key=lambda p: p["tokens"])
  out = []
  for a in curves[adaptive]:
    reach = [p for p in fixed_pts if p["psnr"] >= a["psnr"]]
    row = {"target": a["target"], "adaptive_psnr": a["psnr"],
           "adaptive_bytes": a["bytes_per_image"], "adaptive_mean_tokens": a["mean_tokens"],
           "fixed_tokens": None, "fixed_psnr": None, "fixed_bytes": None, "saving": None}
    if reach:
      p = reach[0]
      row.update(fixed_tokens=p["tokens"], fixed_psnr=p["psnr"],
                 fixed_bytes=p["bytes_per_image"],
                 saving=1.0 - a["bytes_per_image"] / p["bytes_per_image"])
    out.append(row)
  return out


def write_json(result: dict, path: str | os.PathLike) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(result, indent=2))
  return path


def plot(result: dict, path: str | os.PathLike, *, title: str | None = None,
         tokenizer_label: str = "tokenizer") -> Path:
  """One PNG: PSNR and SSIM (and rFID if measured) against bytes per image, all curves."""
  curves = result["curves"]
  keys = ["psnr", "ssim"] + (["rfid"] if any("rfid" in p for c in curves.values()
                                             for p in c) else [])
  # A bare Figure (no pyplot): no global backend switch, nothing left open.
  fig = Figure(figsize=(5 * len(keys), 4))
  axes = fig.subplots(1, len(keys), squeeze=False)[0]
  styles = {"tokenizer": "o-", "adaptive": "D-", "jpeg": "s--", "webp": "^--", "avif": "v--"}
  for ax, key in zip(axes, keys):
    for name, pts in curves.items():
      kind, _, coder = name.partition("/")
      if kind == "tokenizer":
        label = f"{tokenizer_label}, fixed length" + (f" ({coder} .jtok)" if coder else "")
      elif kind == "adaptive":
        label = f"{tokenizer_label}, adaptive length" + (f" ({coder} .jtok)" if coder else "")
      else:
        label = name.upper()
      style = styles.get(kind, ".-")
      if coder == "uniform":
        style = style.replace("-", ":")
      ax.plot([p["bytes_per_image"] for p in pts], [p[key] for p in pts],
              style, label=label, markersize=3)
    ax.set_xscale("log")
    ax.set_xlabel("bytes per image")
    ax.set_ylabel({"psnr": "PSNR (dB)", "ssim": "SSIM", "rfid": "rFID"}[key])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(title or f"rate–distortion, {result['num_images']} images "
               f"{result['image_size'][0]}x{result['image_size'][1]}")
  fig.tight_layout()
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=120)
  return path
