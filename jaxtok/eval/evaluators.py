"""The evaluator contract (docs/design.md §7) and THE static `EVALUATORS` dict.

An evaluator is constructed once with its options and then run any number of times:

  evs = build_evaluators(["psnr", "ssim", "fid", "codebook"], batch_size=32)
  for evaluator in evs:
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

A new evaluator is a subclass of `Evaluator` here plus one line in `EVALUATORS`.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np

from jaxtok import adaptive
from jaxtok import metrics as metrics_lib
from jaxtok.eval import codebook, fid, reduce
from jaxtok.eval.images import iter_batches

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
    return iter_batches(data, self.batch_size, "data")

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
    ssim_gaussian: SSIM window, see `jaxtok.metrics.ssim`.
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
    fns = {m: metrics_lib.METRICS[m] for m in metrics if m != "lpips"}
    if "ssim" in fns:
      fns["ssim"] = lambda a, b: metrics_lib.ssim(a, b, gaussian=ssim_gaussian)
    if "lpips" in metrics:
      fns["lpips"] = adaptive.lpips(lpips_weights)

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
  """Code usage statistics of `tokenizer.encode` over the whole set (see `codebook.py`).

  Factorized tokens `[B, K, F]` also give per-sub-codebook statistics, named after the
  model's `config.branches` when it has F of them (FQGAN: `factor/vis/usage`,
  `factor/sem/perplexity`, ...), else "0", "1", ...
  """

  name = "codebook"

  def __init__(self, *, batch_size: int = 32, prefix: int | None = None,
               per_position: bool = True):
    super().__init__(batch_size=batch_size, prefix=prefix)
    self.per_position = per_position

  def run(self, tokenizer, data):
    counter = codebook.CodebookCounter(int(tokenizer.codebook_size))
    for batch in self.batches(data):
      counter.update(self.tokens(tokenizer, batch))
    counter.allreduce()
    names = getattr(getattr(tokenizer, "config", None), "branches", None)
    factors = counter.shape[1] if counter.shape is not None else 1
    if not (isinstance(names, (tuple, list)) and len(names) == factors):
      names = None
    yield from counter.results(per_position=self.per_position, factor_names=names).items()


EVALUATORS: dict[str, type[Evaluator]] = {
    "recon": ReconEvaluator,
    "fid": FidEvaluator,
    "codebook": CodebookEvaluator,
}


def _options(cls: type[Evaluator]) -> set[str]:
  """The keyword options `cls(...)` takes (its constructor's named parameters)."""
  params = inspect.signature(cls.__init__).parameters.values()
  return {p.name for p in params if p.name != "self" and p.kind in (
      p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def build_evaluators(names: str | Sequence[str], **options) -> list[Evaluator]:
  """Evaluators for metric names, e.g. `["psnr", "ssim", "fid", "codebook"]`.

  Reconstruction metrics (`RECON_METRICS`) are grouped into one ReconEvaluator. Each option
  goes to every selected evaluator whose constructor takes it (batch_size, prefix, method,
  lpips_weights, ...).

  Raises:
    ValueError: an unknown name, or options that none of the selected evaluators takes
      (named in the message).
  """
  if isinstance(names, str):
    names = [n for n in names.split(",") if n]
  names = [n.strip() for n in names]
  unknown = sorted(set(names) - set(RECON_METRICS) - set(EVALUATORS))
  if unknown:
    hint = ("; rate-distortion is `python -m jaxtok.codec rd` (jaxtok.codec.rd)"
            if "rd" in unknown else "")
    raise ValueError(f"names: unknown evaluators {unknown}; expected some of "
                     f"{sorted(set(RECON_METRICS) | set(EVALUATORS))}{hint}")
  keys = list(dict.fromkeys("recon" if n in RECON_METRICS else n for n in names))
  taken = {k: _options(EVALUATORS[k]) for k in keys}
  unused = sorted(set(options) - set().union(*taken.values()))
  if unused:
    raise ValueError(f"options: {unused} are taken by none of the evaluators {keys} "
                     f"(they take {sorted(set().union(*taken.values()))})")
  out: list[Evaluator] = []
  for k in keys:
    kwargs = {o: v for o, v in options.items() if o in taken[k]}
    if k == "recon":
      metrics = [n for n in names if n in RECON_METRICS] or ("psnr", "ssim")
      out.append(ReconEvaluator(metrics, **kwargs))
    else:
      out.append(EVALUATORS[k](**kwargs))
  return out


def run_evaluators(evaluators: Sequence[Evaluator], tokenizer, data) -> dict[str, Any]:
  """Runs each evaluator; `{"<evaluator.name>/<metric>": value}`.

  `data` must be re-iterable (an array or a list of batches) when there are several.
  """
  results = {}
  for ev in evaluators:
    for name, value in ev.run(tokenizer, data):
      results[f"{ev.name}/{name}"] = value
  return results
