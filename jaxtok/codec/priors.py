"""Coding models of `.jtok` payloads, and the tokenizer identity a file is bound to.

- `UniformPrior`: every id equally likely, `log2(V)` bits an id: the fixed-length baseline.
- `MarginalPrior`: per-position code frequencies `counts[K, F, V]` counted on a token set
  (`fit_marginal`), smoothed additively (`alpha`, default 0.5: the Krichevsky–Trofimov
  estimator) so that a code never seen at a position still codes, at a cost of about
  `log2((N + alpha V) / alpha)` bits. Saved as an `.npz` beside the checkpoint
  (`MARGINAL_FILE` in the checkpoint directory) with the tokenizer id it was counted with.

A prior's id (4 bytes of sha256 over its table) goes into every file it codes, so a file is
never decoded with a table other than its own.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jaxtok.io import checkpoint
from jaxtok.tokenizers.quantizers.stats import CodebookStats

MARGINAL_FILE = "prior_marginal.npz"
_PRIOR_FORMAT = "jaxtok-jtok-marginal-prior"
_ids: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def tokenizer_id(tok) -> bytes:
  """4 bytes identifying a tokenizer's decoding function: sha256 over family, config, weights.

  The weights are every model variable but RNG state and code-usage statistics (neither
  changes what `decode` returns). Computed once per Tokenizer object (cached); a model whose
  weights are changed in place afterwards keeps the id it had.
  """
  cached = _ids.get(tok)
  if cached is not None:
    return cached
  h = hashlib.sha256()
  h.update(tok.family.encode())
  h.update(json.dumps(checkpoint.config_to_dict(tok.config), sort_keys=True).encode())
  state = nnx.state(tok.model, nnx.Not(nnx.Any(nnx.RngState, CodebookStats)))
  for path, var in sorted(nnx.to_flat_state(state), key=lambda kv: [str(p) for p in kv[0]]):
    arr = np.ascontiguousarray(np.asarray(var.get_value()))
    h.update("/".join(map(str, path)).encode())
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(arr.tobytes())
  out = h.digest()[:4]
  _ids[tok] = out
  return out


def _token_layout(tok) -> tuple[int, int, int]:
  """(K, F, V) of a discrete tokenizer; ValueError for continuous ones."""
  spec = tok.token_spec
  if spec.continuous:
    raise ValueError(f"tok: .jtok codes discrete token ids; this {tok.family} tokenizer has "
                     f"continuous latents ([B, K, {spec.channels}] float)")
  return spec.num_tokens, spec.ids_per_token, spec.vocab_size


class UniformPrior:
  """Every id in [0, V) equally likely at every position."""
  kind = "uniform"
  prior_id = None

  def check(self, tok) -> None:
    _token_layout(tok)

  def probabilities(self, length: int) -> None:
    return None  # The coder uses constriction's Uniform model.

  def __repr__(self):
    return "UniformPrior()"


class MarginalPrior:
  """Per-position code frequencies of a token set.

  Attributes:
    counts: `[K, F, V]` int64, how often id v appeared at position (k, f).
    alpha: additive smoothing of every count (> 0).
    tokenizer_id: the 4-byte id of the tokenizer the counts came from.
  """
  kind = "marginal"

  def __init__(self, counts: np.ndarray, tokenizer_id: bytes, alpha: float = 0.5):
    counts = np.asarray(counts)
    if counts.ndim != 3 or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
      raise ValueError(f"counts: expected non-negative integer counts [K, F, V], got "
                       f"{counts.dtype} {counts.shape}")
    if not alpha > 0:
      raise ValueError(f"alpha: expected a positive smoothing count, got {alpha}")
    if len(tokenizer_id) != 4:
      raise ValueError(f"tokenizer_id: expected 4 bytes, got {tokenizer_id!r}")
    self.counts = counts.astype(np.int64)
    self.alpha = float(alpha)
    self.tokenizer_id = bytes(tokenizer_id)
    h = hashlib.sha256(b"marginal")
    h.update(f"{self.counts.shape}{self.alpha!r}".encode())
    h.update(self.counts.tobytes())
    self.prior_id = h.digest()[:4]

  @property
  def num_sequences(self) -> int:
    """How many token sequences were counted (those of position 0)."""
    return int(self.counts[0, 0].sum())

  def __repr__(self):
    k, f, v = self.counts.shape
    return (f"MarginalPrior(K={k}, F={f}, V={v}, sequences={self.num_sequences}, "
            f"alpha={self.alpha}, id={self.prior_id.hex()})")

  def check(self, tok) -> None:
    """Raises unless this prior was counted on `tok` (same id and token layout)."""
    k, f, v = _token_layout(tok)
    if tokenizer_id(tok) != self.tokenizer_id:
      raise ValueError(f"prior: this marginal prior was counted with tokenizer id "
                       f"{self.tokenizer_id.hex()}, not with this tokenizer "
                       f"({tokenizer_id(tok).hex()}); fit one for it (fit_marginal)")
    if self.counts.shape != (k, f, v):
      raise ValueError(f"prior: counts of shape {self.counts.shape}, the tokenizer needs "
                       f"{(k, f, v)}")

  def probabilities(self, length: int) -> np.ndarray:
    """`[length * F, V]` float64: the smoothed distribution of each id of a prefix."""
    c = self.counts[:length].astype(np.float64) + self.alpha
    p = c / c.sum(axis=-1, keepdims=True)
    return p.reshape(-1, p.shape[-1])

  def bits(self, ids: np.ndarray) -> np.ndarray:
    """Ideal code length in bits of each `[B, L(, F)]` row under this prior: `[B]`."""
    ids = np.asarray(ids)
    ids = ids[..., None] if ids.ndim == 2 else ids
    b, length, f = ids.shape
    p = self.probabilities(length).reshape(length, f, -1)
    pos_l, pos_f = np.meshgrid(np.arange(length), np.arange(f), indexing="ij")
    return -np.log2(p[pos_l[None], pos_f[None], ids]).sum(axis=(1, 2))

  # -- file -------------------------------------------------------------------------------

  def save(self, path: str | os.PathLike) -> Path:
    """Writes the prior as `.npz` atomically (temp file in the same directory, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, format=np.array(_PRIOR_FORMAT), counts=self.counts,
                 alpha=np.array(self.alpha), tokenizer_id=np.array(self.tokenizer_id.hex()))
      os.replace(tmp, path)
    except BaseException:
      Path(tmp).unlink(missing_ok=True)
      raise
    return path

  @classmethod
  def load(cls, path: str | os.PathLike) -> MarginalPrior:
    """Reads a prior written by `save`, or the `MARGINAL_FILE` of a checkpoint directory."""
    path = Path(path)
    if path.is_dir():
      path = path / MARGINAL_FILE
    if not path.is_file():
      raise ValueError(f"prior: no marginal prior file at {str(path)!r}; write one with "
                       f"`python -m jaxtok.codec fit-prior --checkpoint DIR`")
    try:
      with np.load(path, allow_pickle=False) as z:
        if str(z["format"]) != _PRIOR_FORMAT:
          raise ValueError(f"format {str(z['format'])!r}")
        return cls(z["counts"], bytes.fromhex(str(z["tokenizer_id"])), float(z["alpha"]))
    except (KeyError, OSError, ValueError) as e:
      raise ValueError(f"prior: {str(path)!r} is not a jaxtok marginal prior file ({e})") from e


def fit_marginal(tok, batches: Iterable[Any], *, alpha: float = 0.5,
                 max_images: int | None = None) -> MarginalPrior:
  """Counts the ids `tok.encode` gives on `batches` (each `[B, S, S, 3]` images).

  Fit it on training images, never on the images it will be measured on.
  """
  k, f, v = _token_layout(tok)
  counts = np.zeros((k * f, v), np.int64)
  seen = 0
  for batch in batches:
    if max_images is not None:
      batch = batch[:max_images - seen]
    ids = np.asarray(tok.encode(batch)).reshape(len(batch), k * f)
    for pos in range(k * f):
      counts[pos] += np.bincount(ids[:, pos], minlength=v)
    seen += len(batch)
    if max_images is not None and seen >= max_images:
      break
  if seen == 0:
    raise ValueError("batches: expected at least one image to count, got none")
  return MarginalPrior(counts.reshape(k, f, v), tokenizer_id(tok), alpha)


def resolve(tok, prior: Any) -> UniformPrior | MarginalPrior:
  """A prior object from `"uniform"`, a `MarginalPrior`, or a prior file / checkpoint dir."""
  if isinstance(prior, (UniformPrior, MarginalPrior)):
    out = prior
  elif prior is None or prior == "uniform":
    out = UniformPrior()
  elif prior == "marginal":
    raise ValueError("prior: 'marginal' needs its table: pass a MarginalPrior "
                     "(MarginalPrior.load(checkpoint_dir)) or the path of its file")
  elif isinstance(prior, (str, os.PathLike)):
    out = MarginalPrior.load(prior)
  else:
    raise ValueError(f"prior: expected 'uniform', a MarginalPrior or a prior file path, got "
                     f"{type(prior).__name__}")
  out.check(tok)
  return out


__all__ = ["MARGINAL_FILE", "MarginalPrior", "UniformPrior", "fit_marginal", "resolve",
           "tokenizer_id"]
