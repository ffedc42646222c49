"""Rate–distortion: reconstruction quality against bytes per image, tokenizer vs JPEG/WebP/AVIF.

The comparison One-D-Piece (arXiv 2501.10064) makes; `python -m jaxtok.codec rd` runs
`measure`. Every usable prefix length K is measured: all of 1..K_max when the tokenizer
decodes prefixes (`tokenizer.supports_prefix`), else only K_max. The rate of a prefix:

- in real `.jtok` files (`jtok_priors={name: prior}`, e.g. `{"uniform": "uniform",
  "marginal": MarginalPrior}`): the mean size of the files `jtok.compress_tokens` writes with
  that prior, header included: curves `tokenizer/<name>` (and `adaptive/<name>`);
- without `jtok_priors`: the fixed-length code size `K · F · log2(V) / 8` bytes per image
  (V = codebook size, F = ids per token, 1 unless the quantizer is factorized), no entropy
  coding: curves `tokenizer` (and `adaptive`).

The same images are compressed with Pillow's JPEG and WebP (and AVIF, where Pillow has it)
encoders over a quality sweep (`jaxtok.eval.images.codec_images`); their rate is the full file
size (headers included, as a stored image costs), their quality measured on the decoded file.

Quality per point: mean per-image PSNR (dB) and SSIM (`jaxtok.metrics`, Gaussian window) over
the images, plus rFID when the set has at least `MIN_FID_IMAGES` images. The threshold is
2048 because the 2048x2048 feature covariance is singular below 2049 samples and FID's
small-sample bias dominates differences between points well before that.

Adaptive length (ordered tokenizers): for each PSNR target T in `adaptive_targets`, every image
keeps the shortest prefix reaching T (`Tokenizer.encode_adaptive`); the point is the mean bytes
against the mean quality of those reconstructions. `"auto"` takes as targets the fixed curve's
mean PSNR at a few lengths. `adaptive_vs_fixed` then pairs each adaptive point with the shortest
fixed length whose mean PSNR is at least the adaptive point's.

Rate-distortion optimal adaptive length (`adaptive_budgets`, ordered tokenizers): for each
mean byte budget (by default the fixed curve's bytes at every measured length), the lengths
that maximise the images' total PSNR within it (`jaxtok.adaptive.allocate`, over the per-image
PSNR of every measured length and each image's real file bytes at it): curves `adaptive_rd`
(`adaptive_rd/<name>`). The fixed length is one of the allocations, so this curve is never
below the fixed one at its budgets; `rd_adaptive_vs_fixed` lists both at each budget.

Outputs: a JSON with every curve (`write_json`) and one PNG with all curves (`plot`); `measure`
adds `figures.json` (marginal vs uniform bytes, adaptive vs fixed).
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from matplotlib.figure import Figure

from jaxtok import adaptive, data, metrics
from jaxtok.codec import jtok, priors
from jaxtok.eval import fid
from jaxtok.eval.images import CODECS, codec_images, to_uint8
from jaxtok.nets import inception

MIN_FID_IMAGES = 2048
DEFAULT_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)
DEFAULT_CODECS = tuple(CODECS)


def token_bytes(num_tokens: int, codebook_size: int, ids_per_token: int = 1) -> float:
  """Bytes per image of `num_tokens` ids from a `codebook_size` codebook (fixed-length)."""
  return num_tokens * ids_per_token * math.log2(codebook_size) / 8.0


def usable_lengths(tokenizer) -> list[int]:
  """All prefix lengths 1..K for prefix-capable tokenizers, else [K]."""
  k = int(tokenizer.num_tokens)
  return list(range(1, k + 1)) if getattr(tokenizer, "supports_prefix", False) else [k]


_quality_fns = jax.jit(lambda a, b: (metrics.psnr(a, b), metrics.ssim(a, b)))


def _per_image_quality(real: np.ndarray, fake: np.ndarray, batch_size: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """`[N]` float64 PSNR and SSIM of each reconstruction."""
  psnrs, ssims = [], []
  for s in range(0, len(real), batch_size):
    p, q = _quality_fns(real[s:s + batch_size], np.asarray(fake[s:s + batch_size], np.float32))
    psnrs.append(np.asarray(p, np.float64))
    ssims.append(np.asarray(q, np.float64))
  return np.concatenate(psnrs), np.concatenate(ssims)


def _quality(real: np.ndarray, fake: np.ndarray, batch_size: int) -> tuple[float, float]:
  p, q = _per_image_quality(real, fake, batch_size)
  return float(p.mean()), float(q.mean())


def _fid(real_stats, fake: np.ndarray, extractor, batch_size, method) -> float:
  fake_stats = fid.accumulate(fake, extractor=extractor, batch_size=batch_size).mean_cov()
  return fid.frechet_distance(*real_stats, *fake_stats, method=method)


def auto_targets(fixed: Sequence[dict], num: int = 6) -> list[float]:
  """PSNR targets for the adaptive curve: the fixed curve's PSNR at `num` spread lengths."""
  k = max(p["tokens"] for p in fixed)
  picks = set(np.unique(np.round(np.geomspace(1, k, num)).astype(int)).tolist())
  return [round(p["psnr"], 2) for p in fixed if p["tokens"] in picks]


def rate_distortion(tokenizer, images: np.ndarray, *, lengths: Sequence[int] | None = None,
                    codecs: Sequence[str] = ("jpeg", "webp"),
                    qualities: Sequence[int] = DEFAULT_QUALITIES, batch_size: int = 32,
                    with_fid: bool | None = None, extractor=None,
                    fid_method: str = "sqrtm", jtok_priors: Mapping[str, Any] | None = None,
                    adaptive_targets: Sequence[float] | str | None = None,
                    adaptive_budgets: Sequence[float] | str | None = None
                    ) -> dict[str, Any]:
  """Every curve for `images` (uint8 `[N, R, R, 3]`, R = the tokenizer's image size).

  Args:
    tokenizer: a `jaxtok.Tokenizer` (anything with its encode/decode interface when
      `jtok_priors` is None), or None for codecs only.
    lengths: prefix lengths to measure (default `usable_lengths(tokenizer)`).
    codecs, qualities: the Pillow codecs (`jaxtok.eval.images.CODECS`) and their qualities.
    with_fid: add rFID per point; default when N >= MIN_FID_IMAGES.
    extractor, fid_method: FID features (default the FID Inception) and `fid.frechet_distance`
      method.
    jtok_priors: `{name: prior}` ("uniform", a `MarginalPrior`, or a prior file): the rate is
      the mean bytes of the `.jtok` files written with each prior; None: the fixed-length
      code size (see the module docstring).
    adaptive_targets: PSNR targets of the adaptive curve, "auto", or None (no adaptive curve;
      needs a prefix tokenizer).
    adaptive_budgets: mean bytes per image of the rate-distortion optimal adaptive curve
      (`adaptive_rd`), "auto" (the fixed curve's bytes at every measured length, per rate), or
      None (no such curve; needs a prefix tokenizer).

  Returns:
    `{"num_images", "image_size", "min_fid_images", "curves": {name: [point, ...]}}`, each
    point `{"bytes_per_image", "bits_per_pixel", "psnr", "ssim", ["rfid"], "tokens" or
    "quality" (or "target", "mean_tokens" on adaptive curves; "budget", "mean_tokens" on
    `adaptive_rd` curves)}`, sorted by rate.
  """
  images = inception.check_images(images)
  if images.dtype != np.uint8:
    images = to_uint8(images)
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
      pt["rfid"] = _fid(real_stats, to_uint8(fake), extractor, batch_size, fid_method)
    return pt

  if tokenizer is not None:
    ids = np.concatenate([tokenizer.encode(images[s:s + batch_size])
                          for s in range(0, n, batch_size)])
    f = ids.shape[2] if ids.ndim == 3 else 1
    usable = usable_lengths(tokenizer)
    lengths = usable if lengths is None else [int(k) for k in lengths]
    if not lengths or set(lengths) - set(usable):
      raise ValueError(f"lengths: expected some of the usable prefix lengths "
                       f"{usable[0]}..{usable[-1]} of this tokenizer, got {lengths}")
    # Rates: None = the fixed-length code size; else a prior, resolved once.
    rates = ({None: None} if jtok_priors is None else
             {name: priors.resolve(tokenizer, p) for name, p in jtok_priors.items()})

    def image_bytes(prior, per_image_lengths):
      """`[N]` float64 bytes of each image at its length."""
      if prior is None:
        v = int(tokenizer.codebook_size)
        return np.asarray([token_bytes(int(m), v, f) for m in per_image_lengths], np.float64)
      blobs = jtok.compress_tokens(tokenizer, ids, lengths=per_image_lengths, prior=prior)
      return np.asarray([len(b) for b in blobs], np.float64)

    def nbytes(prior, per_image_lengths):
      return float(image_bytes(prior, per_image_lengths).mean())

    def with_rates(quality, per_image_lengths):
      """`{rate name: the quality point at that rate}` for one set of reconstructions."""
      out = {}
      for name, prior in rates.items():
        b = nbytes(prior, per_image_lengths)
        out[name] = {**quality, "bytes_per_image": b, "bits_per_pixel": 8 * b / (h * w)}
      return out

    fixed = {name: [] for name in rates}
    psnr_table = np.zeros((n, len(lengths)))  # per image and measured length
    for j, k in enumerate(lengths):
      fake = np.concatenate([tokenizer.decode(ids[s:s + batch_size, :k])
                             for s in range(0, n, batch_size)])
      psnr_table[:, j] = _per_image_quality(images, fake, batch_size)[0]
      for name, pt in with_rates(point(fake, 0.0, tokens=int(k)), np.full(n, k)).items():
        fixed[name].append(pt)
    for name in rates:
      curves["tokenizer" if name is None else f"tokenizer/{name}"] = fixed[name]
    if adaptive_targets is not None:
      if not getattr(tokenizer, "supports_prefix", False):
        raise ValueError("adaptive_targets: adaptive length needs a prefix tokenizer")
      targets = (auto_targets(fixed[next(iter(rates))]) if adaptive_targets == "auto"
                 else [float(t) for t in adaptive_targets])
      ada_pts = {name: [] for name in rates}
      for t in targets:
        ada = tokenizer.encode_adaptive(images, ("psnr", t), ids=ids, batch_size=batch_size)
        fake = jtok.decode_groups(tokenizer, ada.prefixes(), batch_size)
        quality = point(fake, 0.0, target=t, mean_tokens=float(ada.lengths.mean()))
        for name, pt in with_rates(quality, ada.lengths).items():
          ada_pts[name].append(pt)
      for name in rates:
        curves["adaptive" if name is None else f"adaptive/{name}"] = sorted(
            ada_pts[name], key=lambda p: p["bytes_per_image"])
    if adaptive_budgets is not None:
      if not getattr(tokenizer, "supports_prefix", False):
        raise ValueError("adaptive_budgets: adaptive length needs a prefix tokenizer")
      lens = np.asarray(lengths)
      for name, prior in rates.items():
        table = np.stack([image_bytes(prior, np.full(n, k)) for k in lengths], axis=1)
        budgets = (table.mean(axis=0).tolist() if adaptive_budgets == "auto"
                   else [float(b) for b in adaptive_budgets])
        pts = []
        for budget in budgets:
          choice = adaptive.allocate(psnr_table, table, budget=budget)
          per = lens[choice]
          fake = jtok.decode_groups(tokenizer, [ids[i, :m] for i, m in enumerate(per)],
                                    batch_size)
          pt = point(fake, float(table[np.arange(n), choice].mean()), budget=float(budget),
                     mean_tokens=float(per.mean()))
          pts.append(pt)
        curves["adaptive_rd" if name is None else f"adaptive_rd/{name}"] = sorted(
            pts, key=lambda p: p["bytes_per_image"])
  for codec in codecs:
    pts = []
    for q in qualities:
      fake, size = codec_images(images, codec, q)
      pts.append(point(fake.astype(np.float32) / 255.0, size, quality=int(q)))
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


def rd_adaptive_vs_fixed(result: dict, fixed: str = "tokenizer",
                         adaptive_rd: str = "adaptive_rd") -> list[dict[str, Any]]:
  """Each byte budget's rate-distortion optimal adaptive point beside the fixed lengths.

  Returns `[{"budget", "adaptive_bytes", "adaptive_psnr", "adaptive_mean_tokens",
  "fixed_tokens", "fixed_bytes", "fixed_psnr", "gain_db"}]`: the fixed length is the longest
  whose mean bytes fit the budget (None where none does), `gain_db` = adaptive - fixed PSNR.
  """
  fixed_pts = sorted(result["curves"][fixed], key=lambda p: p["tokens"])
  out = []
  for a in result["curves"][adaptive_rd]:
    fit = [p for p in fixed_pts if p["bytes_per_image"] <= a["budget"] * (1 + 1e-12)]
    row = {"budget": a["budget"], "adaptive_bytes": a["bytes_per_image"],
           "adaptive_psnr": a["psnr"], "adaptive_mean_tokens": a["mean_tokens"],
           "fixed_tokens": None, "fixed_bytes": None, "fixed_psnr": None, "gain_db": None}
    if fit:
      p = fit[-1]
      row.update(fixed_tokens=p["tokens"], fixed_bytes=p["bytes_per_image"],
                 fixed_psnr=p["psnr"], gain_db=a["psnr"] - p["psnr"])
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
  styles = {"tokenizer": "o-", "adaptive": "D-", "adaptive_rd": "*-", "jpeg": "s--",
            "webp": "^--", "avif": "v--"}
  for ax, key in zip(axes, keys):
    for name, pts in curves.items():
      kind, _, coder = name.partition("/")
      if kind == "tokenizer":
        label = f"{tokenizer_label}, fixed length" + (f" ({coder} .jtok)" if coder else "")
      elif kind == "adaptive":
        label = (f"{tokenizer_label}, adaptive length, PSNR target"
                 + (f" ({coder} .jtok)" if coder else ""))
      elif kind == "adaptive_rd":
        label = (f"{tokenizer_label}, adaptive length, byte budget"
                 + (f" ({coder} .jtok)" if coder else ""))
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


def measure(tok, source: str, out_dir: str | os.PathLike, *, prior: Any,
            tiles: int = 1, max_images: int | None = None,
            lengths: Sequence[int] | None = None, targets: Sequence[float] | str = "auto",
            qualities: Sequence[int] | None = None, batch_size: int = 32) -> dict[str, Any]:
  """R-D curves of `tok` on `source` in uniform and marginal (`prior`) `.jtok` files.

  Writes `rate_distortion.json` / `.png` and `figures.json` in `out_dir`, and returns the
  figures that matter:

  - `marginal_vs_uniform`: mean file bytes per image of both priors at the longest length
    measured (and summed over every fixed length);
  - `adaptive_vs_fixed` (prefix tokenizers): for each PSNR target, adaptive length's mean bytes
    and mean PSNR beside the shortest fixed length reaching that mean PSNR (both in marginal
    `.jtok` files);
  - `rd_adaptive_vs_fixed` (prefix tokenizers): per prior, at each fixed length's bytes as the
    budget, the rate-distortion optimal adaptive PSNR beside the fixed one (`gain_db`).

  Args:
    tok: the `jaxtok.Tokenizer`.
    source, tiles, max_images: the images, `jaxtok.data.eval_tiles(source, ...)`.
    prior: the marginal prior (a `MarginalPrior` or its file).
    lengths: prefix lengths (default every usable one); targets: PSNR targets or "auto".
    qualities: codec qualities (default `DEFAULT_QUALITIES`).
  """
  images = data.eval_tiles(source, tok.image_size, max_images=max_images, tiles=tiles)
  result = rate_distortion(
      tok, images, lengths=lengths, codecs=DEFAULT_CODECS,
      qualities=qualities or DEFAULT_QUALITIES, batch_size=batch_size,
      jtok_priors={"uniform": "uniform", "marginal": prior},
      adaptive_targets=targets if tok.supports_prefix else None,
      adaptive_budgets="auto" if tok.supports_prefix else None)
  out = Path(out_dir)
  write_json(result, out / "rate_distortion.json")
  plot(result, out / "rate_distortion.png", tokenizer_label=tok.family,
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
      "codecs_smallest": {c: curves[c][0] for c in DEFAULT_CODECS},
      "files": [str(out / "rate_distortion.json"), str(out / "rate_distortion.png")],
  }
  if tok.supports_prefix:
    figures["adaptive_vs_fixed"] = adaptive_vs_fixed(result, "tokenizer/marginal",
                                                     "adaptive/marginal")
    figures["rd_adaptive_vs_fixed"] = {
        c: rd_adaptive_vs_fixed(result, f"tokenizer/{c}", f"adaptive_rd/{c}")
        for c in ("uniform", "marginal")}
  write_json(figures, out / "figures.json")
  return figures


__all__ = ["CODECS", "DEFAULT_CODECS", "DEFAULT_QUALITIES", "MIN_FID_IMAGES",
           "adaptive_vs_fixed", "auto_targets", "measure", "plot", "rate_distortion",
           "rd_adaptive_vs_fixed", "token_bytes", "usable_lengths", "write_json"]
