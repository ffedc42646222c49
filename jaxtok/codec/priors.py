"""Coding models of `.jtok` payloads, and the tokenizer identity a file is bound to.

The coded symbols: atomic ids are coded as they are; the ids of a radix tokenizer
(`TokenSpec.radix`, FSQ levels) as their d = len(radix) per-channel digits, digit j in
[0, radix[j]) (`digits` / `from_digits`), token-major (token 0's digits, token 1's, ...).

- `UniformPrior`: every id equally likely, `log2(V)` bits an id: the fixed-length baseline
  (radix ids: each digit uniform over its own levels, the same `log2(V)` in total).
- `MarginalPrior`: per-position code frequencies `counts[K, F, V]` counted on a token set
  (`fit_marginal`), smoothed additively (`alpha`, default 0.5: the Krichevsky–Trofimov
  estimator) so that a code never seen at a position still codes, at a cost of about
  `log2((N + alpha V) / alpha)` bits. For a radix tokenizer, per-position per-channel digit
  frequencies `counts[K, d, max(radix)]` instead (a product of per-channel marginals; digit j
  smoothed over its own `radix[j]` levels, the padding entries stay 0): memory `K d max(radix)`
  however large V is. Saved as an `.npz` beside the checkpoint (`MARGINAL_FILE` in the
  checkpoint directory) with the tokenizer id it was counted with and its layout; a prior of
  the other layout than the tokenizer's is refused.

A prior's id (4 bytes of sha256 over its table) goes into every file it codes, so a file is
never decoded with a table other than its own.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from jaxtok import api

MARGINAL_FILE = "prior_marginal.npz"
_PRIOR_FORMAT = "jaxtok-jtok-marginal-prior"          # counts[K, F, V] per code
_RADIX_PRIOR_FORMAT = "jaxtok-jtok-marginal-prior-radix"  # counts[K, d, max(radix)] + radix
# constriction's models take alphabets below 2**24 symbols (its 24-bit probability precision).
MAX_ALPHABET = 2 ** 24 - 1


def tokenizer_id(tok) -> bytes:
  """4 bytes identifying a tokenizer's decoding function: the first 4 bytes of
  `jaxtok.api.fingerprint(tok)` (sha256 over family, config, weights; RNG state and
  code-usage statistics left out)."""
  return bytes.fromhex(api.fingerprint(tok))[:4]


def _token_layout(tok) -> tuple[int, int, int]:
  """(K, F, V) of a discrete tokenizer; ValueError for continuous ones."""
  spec = tok.token_spec
  if spec.continuous:
    raise ValueError(f"tok: .jtok codes discrete token ids; this {tok.family} tokenizer has "
                     f"continuous latents ([B, K, {spec.channels}] float)")
  return spec.num_tokens, spec.ids_per_token, spec.vocab_size


def token_radix(tok) -> tuple[int, ...] | None:
  """The tokenizer's radix (its ids are coded as these digits), or None (atomic ids)."""
  _token_layout(tok)
  radix = tok.token_spec.radix
  if radix is not None and max(radix) > MAX_ALPHABET:
    raise ValueError(f"tok: radix {list(radix)}: the coder takes digits of at most "
                     f"{MAX_ALPHABET} levels")
  return radix


def digits(ids: np.ndarray, radix: tuple[int, ...]) -> np.ndarray:
  """`[..., d]` int64 digits of mixed-radix ids (channel 0 the least significant)."""
  return np.stack(np.unravel_index(np.asarray(ids, np.int64), radix, order="F"),
                  axis=-1).astype(np.int64)


def from_digits(d: np.ndarray, radix: tuple[int, ...]) -> np.ndarray:
  """Ids `[...]` int64 of digits `[..., d]` (the inverse of `digits`)."""
  d = np.asarray(d, np.int64)
  return np.ravel_multi_index(tuple(np.moveaxis(d, -1, 0)), radix, order="F").astype(np.int64)


def _layout_name(radix) -> str:
  return "per code" if radix is None else f"per digit of radix {list(radix)}"


class UniformPrior:
  """Every id in [0, V) equally likely at every position (radix ids: every digit)."""
  kind = "uniform"
  prior_id = None

  def check(self, tok) -> None:
    token_radix(tok)

  def probabilities(self, length: int) -> None:
    return None  # The coder uses constriction's Uniform model.

  def __repr__(self):
    return "UniformPrior()"


class MarginalPrior:
  """Per-position code frequencies of a token set (radix tokenizers: digit frequencies).

  Attributes:
    counts: `[K, F, V]` int64, how often id v appeared at position (k, f); with `radix`,
      `[K, d, max(radix)]`: how often digit value r appeared in channel j of token k
      (entries r >= radix[j] are 0).
    alpha: additive smoothing of every count (> 0; radix: of every count r < radix[j]).
    tokenizer_id: the 4-byte id of the tokenizer the counts came from.
    radix: the tokenizer's `TokenSpec.radix` for a per-digit prior; None: per code.
  """
  kind = "marginal"

  def __init__(self, counts: np.ndarray, tokenizer_id: bytes, alpha: float = 0.5,
               radix: tuple[int, ...] | None = None):
    counts = np.asarray(counts)
    if counts.ndim != 3 or not np.issubdtype(counts.dtype, np.integer) or counts.min() < 0:
      want = "[K, F, V]" if radix is None else "[K, d, max(radix)]"
      raise ValueError(f"counts: expected non-negative integer counts {want}, got "
                       f"{counts.dtype} {counts.shape}")
    if not alpha > 0:
      raise ValueError(f"alpha: expected a positive smoothing count, got {alpha}")
    if len(tokenizer_id) != 4:
      raise ValueError(f"tokenizer_id: expected 4 bytes, got {tokenizer_id!r}")
    self.counts = counts.astype(np.int64)
    self.alpha = float(alpha)
    self.tokenizer_id = bytes(tokenizer_id)
    self.radix = None
    if radix is not None:
      self.radix = tuple(int(r) for r in radix)
      if not self.radix or min(self.radix) < 2:
        raise ValueError(f"radix: expected per-channel level counts >= 2, got {list(radix)}")
      if counts.shape[1:] != (len(self.radix), max(self.radix)):
        raise ValueError(f"counts: expected [K, d, max(radix)] = [K, {len(self.radix)}, "
                         f"{max(self.radix)}] for radix {list(self.radix)}, got {counts.shape}")
      if (self.counts * ~self._valid()).any():
        raise ValueError(f"counts: digit counts at or above a channel's level count (radix "
                         f"{list(self.radix)}) must be 0")
    h = hashlib.sha256(b"marginal")
    h.update(f"{self.counts.shape}{self.alpha!r}".encode())
    if self.radix is not None:  # Per-code priors keep the id they always had.
      h.update(f"radix{list(self.radix)}".encode())
    h.update(self.counts.tobytes())
    self.prior_id = h.digest()[:4]

  def _valid(self) -> np.ndarray:
    """`[d, max(radix)]` bool: which digit values each channel has."""
    return np.arange(max(self.radix))[None] < np.asarray(self.radix)[:, None]

  @property
  def num_sequences(self) -> int:
    """How many token sequences were counted (those of position 0)."""
    return int(self.counts[0, 0].sum())

  def __repr__(self):
    k, f, v = self.counts.shape
    if self.radix is not None:
      return (f"MarginalPrior(K={k}, radix={list(self.radix)}, sequences="
              f"{self.num_sequences}, alpha={self.alpha}, id={self.prior_id.hex()})")
    return (f"MarginalPrior(K={k}, F={f}, V={v}, sequences={self.num_sequences}, "
            f"alpha={self.alpha}, id={self.prior_id.hex()})")

  def check(self, tok) -> None:
    """Raises unless this prior was counted on `tok` (same layout, id and shape)."""
    k, f, v = _token_layout(tok)
    radix = token_radix(tok)
    if radix != self.radix:
      raise ValueError(f"prior: this marginal prior counts {_layout_name(self.radix)}, this "
                       f"{tok.family} tokenizer's ids are coded {_layout_name(radix)}; fit one "
                       f"for it (fit_marginal / `python -m jaxtok.codec fit-prior`)")
    if tokenizer_id(tok) != self.tokenizer_id:
      raise ValueError(f"prior: this marginal prior was counted with tokenizer id "
                       f"{self.tokenizer_id.hex()}, not with this tokenizer "
                       f"({tokenizer_id(tok).hex()}); fit one for it (fit_marginal)")
    want = (k, f, v) if radix is None else (k, len(radix), max(radix))
    if self.counts.shape != want:
      raise ValueError(f"prior: counts of shape {self.counts.shape}, the tokenizer needs "
                       f"{want}")

  def probabilities(self, length: int) -> np.ndarray:
    """The smoothed distribution of each coded symbol of a prefix of `length` tokens:
    `[length * F, V]` float64 (per code), or `[length * d, max(radix)]` (radix: digit j of
    token k in row k d + j, 0 beyond the channel's `radix[j]` levels)."""
    c = self.counts[:length].astype(np.float64) + self.alpha
    if self.radix is not None:
      c *= self._valid()
    p = c / c.sum(axis=-1, keepdims=True)
    return p.reshape(-1, p.shape[-1])

  def bits(self, ids: np.ndarray) -> np.ndarray:
    """Ideal code length in bits of each `[B, L(, F)]` row under this prior: `[B]`."""
    ids = np.asarray(ids)
    if self.radix is not None:
      ids = digits(ids, self.radix)  # [B, L, d]: the digits are the coded symbols.
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
        fields = dict(format=np.array(_PRIOR_FORMAT), counts=self.counts,
                      alpha=np.array(self.alpha),
                      tokenizer_id=np.array(self.tokenizer_id.hex()))
        if self.radix is not None:
          fields.update(format=np.array(_RADIX_PRIOR_FORMAT),
                        radix=np.array(self.radix, np.int64))
        np.savez(f, **fields)
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
        form = str(z["format"])
        if form not in (_PRIOR_FORMAT, _RADIX_PRIOR_FORMAT):
          raise ValueError(f"format {form!r}")
        radix = tuple(z["radix"].tolist()) if form == _RADIX_PRIOR_FORMAT else None
        return cls(z["counts"], bytes.fromhex(str(z["tokenizer_id"])), float(z["alpha"]),
                   radix=radix)
    except (KeyError, OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile,
            zlib.error) as e:
      raise ValueError(f"prior: {str(path)!r} is not a jaxtok marginal prior file "
                       f"({type(e).__name__}: {e})") from e


def fit_marginal(tok, batches: Iterable[Any], *, alpha: float = 0.5,
                 max_images: int | None = None) -> MarginalPrior:
  """Counts the ids `tok.encode` gives on `batches` (each `[B, S, S, 3]` images).

  Fit it on training images, never on the images it will be measured on. For a radix
  tokenizer the digits are counted (`counts[K, d, max(radix)]`).
  """
  k, f, v = _token_layout(tok)
  radix = token_radix(tok)
  if radix is not None:  # Symbol slots (k, j) of max(radix) values each.
    f, v = len(radix), max(radix)
  counts = np.zeros((k * f, v), np.int64)
  seen = 0
  for batch in batches:
    if max_images is not None:
      batch = batch[:max_images - seen]
    ids = np.asarray(tok.encode(batch))
    if radix is not None:
      ids = digits(ids, radix)
    ids = ids.reshape(len(batch), k * f)
    for pos in range(k * f):
      counts[pos] += np.bincount(ids[:, pos], minlength=v)
    seen += len(batch)
    if max_images is not None and seen >= max_images:
      break
  if seen == 0:
    raise ValueError("batches: expected at least one image to count, got none")
  return MarginalPrior(counts.reshape(k, f, v), tokenizer_id(tok), alpha, radix=radix)


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


__all__ = ["MARGINAL_FILE", "MAX_ALPHABET", "MarginalPrior", "UniformPrior", "digits",
           "fit_marginal", "from_digits", "resolve", "token_radix", "tokenizer_id"]
