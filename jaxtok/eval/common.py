"""The evaluator contract (DESIGN.md §7) and the registry the trainer and the CLI build from.

An evaluator is constructed once with its options and then run any number of times:

  ev = build_evaluators(["psnr", "ssim", "fid", "codebook"], batch_size=32)
  for evaluator in ev:
    for name, value in evaluator.run(tokenizer, images):   # -> eval/<evaluator.name>/<name>
      ...

`tokenizer` is anything with the `jaxtok.Tokenizer` interface (`encode(images) -> [B, K]`
int32 numpy, `decode(tokens) -> [B, H, W, 3]` float in [0, 1], `num_tokens`, `codebook_size`;
a trainer wraps its model with `jaxtok.api.Tokenizer(model)`). `data` is a uint8
`[N, H, W, 3]` array or an iterable of such batches (or of `{"image": batch}` dicts), each
host passing its own shard. Values are Python floats/ints, or numpy arrays for per-position
statistics (log only `np.ndim(value) == 0` ones to TensorBoard). Sums are accumulated over
batches on the host (float64), summed over hosts at the end, then divided; jitted inner
functions are built once per evaluator and cached by JAX per batch shape.
"""
from __future__ import annotations

import inspect
from typing import Any, Iterator

import jax
import numpy as np

from jaxtok.eval import codebook, fid, recon, reduce

RECON_METRICS = ("psnr", "ssim", "mse", "l1", "lpips")


class Evaluator:
  """Base class: `run(tokenizer, data)` yields `(metric_name, value)` pairs."""

  name = "evaluator"

  def __init__(self, *, batch_size: int = 32, prefix: int | None = None):
    if batch_size < 1:
      raise ValueError(f"batch_size: expected a positive int, got {batch_size}")
    if prefix is not None and prefix < 1:
      raise ValueError(f"prefix: expected None or a positive token count, got {prefix}")
    self.batch_size = batch_size
    self.prefix = prefix

  def batches(self, data: Any) -> Iterator[np.ndarray]:
    return fid.iter_batches(data, self.batch_size, "data")

  def tokens(self, tokenizer, batch: np.ndarray) -> np.ndarray:
    ids = tokenizer.encode(batch)
    return ids if self.prefix is None else ids[:, :self.prefix]

  def run(self, tokenizer, data) -> Iterator[tuple[str, Any]]:
    raise NotImplementedError


class ReconEvaluator(Evaluator):
  """Mean per-image PSNR (dB, range [0, 1]), SSIM, MSE, L1 and LPIPS of reconstructions.

  Args:
    metrics: any of `RECON_METRICS`; "lpips" needs `lpips_weights` (paths for
      `jaxtok.nets.perceptual.LPIPS.from_file`).
    ssim_gaussian: SSIM window, see `recon.ssim`.
  """

  name = "recon"

  def __init__(self, metrics=("psnr", "ssim"), *, batch_size: int = 32,
               prefix: int | None = None, ssim_gaussian: bool = True, lpips_weights=None):
    super().__init__(batch_size=batch_size, prefix=prefix)
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(RECON_METRICS))
    if unknown or not metrics:
      raise ValueError(f"metrics: expected a non-empty subset of {RECON_METRICS}, got {metrics}")
    if "lpips" in metrics and lpips_weights is None:
      raise ValueError("lpips_weights: LPIPS needs weight files (see jaxtok.nets.perceptual)"
                       ", got None")
    self.metrics = metrics
    fns = {m: recon.METRICS[m] for m in metrics if m != "lpips"}
    if "ssim" in fns:
      fns["ssim"] = lambda a, b: recon.ssim(a, b, gaussian=ssim_gaussian)
    if "lpips" in metrics:
      fns["lpips"] = recon.make_lpips(lpips_weights)

    def per_batch_sums(real, fake):  # Built once; jit caches one executable per shape.
      return {m: fn(real, fake).sum() for m, fn in fns.items()}

    self._sums = jax.jit(per_batch_sums)

  def run(self, tokenizer, data):
    names = list(self.metrics)
    totals, count = np.zeros(len(names), np.float64), 0
    for batch in self.batches(data):
      fake = tokenizer.decode(self.tokens(tokenizer, batch))
      sums = self._sums(batch, np.asarray(fake, np.float32))
      totals += np.array([float(sums[m]) for m in names])
      count += batch.shape[0]
    totals = reduce.process_sum(totals)
    count = int(reduce.process_sum(np.array([count], np.int64))[0])
    if count == 0:
      raise ValueError("data: expected at least one image, got none")
    for m, total in zip(names, totals):
      yield m, float(total / count)
    yield "num_images", count


class FidEvaluator(Evaluator):
  """rFID: FID between the data and its reconstructions (`fid.reconstruction_fid`).

  Args:
    method: "sqrtm" (pytorch-fid numerics) or "eigh" (fast), see `fid.frechet_distance`.
    reference_stats: optional `.npz` (mu/sigma) path: also report FID of the
      reconstructions against it (`fid_vs_reference`).
  """

  name = "fid"

  def __init__(self, *, batch_size: int = 32, prefix: int | None = None,
               method: str = "sqrtm", reference_stats: str | None = None, extractor=None):
    super().__init__(batch_size=batch_size, prefix=prefix)
    self.method = method
    self.reference_stats = reference_stats
    self.extractor = extractor

  def run(self, tokenizer, data):
    real, fake = fid.reconstruction_stats(tokenizer, data, extractor=self.extractor,
                                          batch_size=self.batch_size, prefix=self.prefix)
    fake_stats = fake.mean_cov()
    yield "rfid", fid.frechet_distance(*real.mean_cov(), *fake_stats, method=self.method)
    if self.reference_stats:
      ref = fid.load_statistics(self.reference_stats)
      yield "fid_vs_reference", fid.frechet_distance(*ref, *fake_stats, method=self.method)
    yield "num_images", real.n


class CodebookEvaluator(Evaluator):
  """Code usage statistics of `tokenizer.encode` over the whole set (see `codebook.py`)."""

  name = "codebook"

  def __init__(self, *, batch_size: int = 32, prefix: int | None = None,
               per_position: bool = True):
    super().__init__(batch_size=batch_size, prefix=prefix)
    self.per_position = per_position

  def run(self, tokenizer, data):
    counter = codebook.CodebookCounter(int(tokenizer.codebook_size))
    for batch in self.batches(data):
      counter.update(self.tokens(tokenizer, batch))
    yield from counter.allreduce().results(per_position=self.per_position).items()


EVALUATORS: dict[str, type[Evaluator]] = {
    "recon": ReconEvaluator, "fid": FidEvaluator, "codebook": CodebookEvaluator,
}


def register(name: str, cls: type[Evaluator]) -> None:
  """Adds an evaluator class under `name` (e.g. "rd" from rate_distortion.py)."""
  EVALUATORS[name] = cls


def _accepted(cls, kwargs: dict) -> dict:
  params = inspect.signature(cls.__init__).parameters
  return {k: v for k, v in kwargs.items() if k in params}


def build_evaluators(names, **kwargs) -> list[Evaluator]:
  """Evaluators for metric names, e.g. `["psnr", "ssim", "fid", "codebook", "rd"]`.

  Reconstruction metrics (`RECON_METRICS`) are grouped into one ReconEvaluator. Each evaluator
  receives the keyword arguments its constructor accepts (batch_size, prefix, method,
  lpips_weights, out_dir, ...); the rest are ignored by it.
  """
  from jaxtok.eval import rate_distortion  # pylint: disable=g-import-not-at-top,unused-import
  if isinstance(names, str):
    names = [n for n in names.split(",") if n]
  names = [n.strip() for n in names]
  recon_metrics = [n for n in names if n in RECON_METRICS]
  unknown = sorted(set(names) - set(RECON_METRICS) - set(EVALUATORS) - {"recon"})
  if unknown:
    raise ValueError(f"names: unknown evaluators {unknown}; expected some of "
                     f"{sorted(set(RECON_METRICS) | set(EVALUATORS))}")
  out: list[Evaluator] = []
  seen = set()
  for n in names:
    if n in RECON_METRICS or n == "recon":
      if "recon" in seen:
        continue
      seen.add("recon")
      metrics = recon_metrics or ("psnr", "ssim")
      out.append(ReconEvaluator(metrics, **_accepted(ReconEvaluator, kwargs)))
    elif n not in seen:
      seen.add(n)
      out.append(EVALUATORS[n](**_accepted(EVALUATORS[n], kwargs)))
  return out


def run_evaluators(evaluators, tokenizer, data) -> dict[str, Any]:
  """Runs each evaluator; `{"<evaluator.name>/<metric>": value}`.

  `data` must be re-iterable (an array or a list of batches) when there are several.
  """
  results = {}
  for ev in evaluators:
    for name, value in ev.run(tokenizer, data):
      results[f"{ev.name}/{name}"] = value
  return results
