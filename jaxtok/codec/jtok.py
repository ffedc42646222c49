"""Images <-> `.jtok` blobs: tokenize, entropy-code with `constriction`, and back.

    from jaxtok import codec
    blobs = codec.compress(tok, images)                      # list[bytes], one per image
    blobs = codec.compress(tok, images, prior=codec.MarginalPrior.load(ckpt_dir))
    blobs = codec.compress(tok, images, target=("psnr", 25.0))   # per-image adaptive length
    recon = codec.decompress(tok, blobs)                     # [N, S, S, 3] float32

Token level: `compress_tokens(tok, ids, lengths=...)` / `decompress_tokens(tok, blobs)`.
`decompress(tok, compress(tok, x))` is exactly `tok.decode(tok.encode(x))` (per-image
prefixes for adaptive blobs): the ids round-trip bit for bit. The coder is constriction's
range coder (`constriction.stream.queue`), a few bits above the ideal code length per file.
FSQ ids (`TokenSpec.radix`) are coded as their per-channel digits, each over its own levels
(format version 2), so vocabularies of any size code (2**30 codes: 10 digits of 8 levels).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import constriction
import numpy as np

from jaxtok.codec import format as fmt
from jaxtok.codec import priors
from jaxtok.codec.format import Header, JtokError
from jaxtok.tokenizers import interface


def _model(prior, vocab_size: int, radix: tuple[int, ...] | None, num_tokens: int):
  """(constriction model, `()` or `(per-symbol parameters,)`) for `num_tokens` tokens."""
  if prior.kind == "marginal":  # Rows as the symbols: ids, or digits (0 beyond a channel).
    return (constriction.stream.model.Categorical(perfect=False),
            (prior.probabilities(num_tokens),))
  if radix is None:
    return constriction.stream.model.Uniform(int(vocab_size)), ()
  return (constriction.stream.model.Uniform(),  # Digit j: uniform over its radix[j] levels.
          (np.tile(np.asarray(radix, np.int32), num_tokens),))


def _encode(symbols: np.ndarray, model, params) -> bytes:
  """The range coder's words for `symbols`, as little-endian bytes."""
  enc = constriction.stream.queue.RangeEncoder()
  enc.encode(symbols, model, *params)
  return np.asarray(enc.get_compressed(), np.uint32).astype("<u4").tobytes()


def compress_tokens(tok, ids: Any, *, lengths: Any = None, prior: Any = "uniform"
                    ) -> list[bytes]:
  """Token ids -> one `.jtok` blob per image.

  Args:
    tok: the `jaxtok.Tokenizer` the ids came from.
    ids: `[B, L]` (or `[B, L, F]`) ids as `tok.encode` gives, or a prefix of them.
    lengths: optional per-image lengths `[B]` (or one int), each in 1..L: image i stores
      `ids[i, :lengths[i]]` (checked by `interface.check_lengths`).
    prior: "uniform", a `MarginalPrior`, or a prior file / checkpoint directory.

  Returns:
    `B` blobs.
  """
  ids = tok.check_tokens(ids)
  p = priors.resolve(tok, prior)
  k, f, v = priors._token_layout(tok)
  radix = priors.token_radix(tok)
  b, width = ids.shape[:2]
  lengths = (np.full((b,), width, np.int32) if lengths is None else
             interface.check_lengths(lengths, tok.token_spec, b, width, family=tok.family))
  tid = priors.tokenizer_id(tok)
  out = []
  for i in range(b):
    n = int(lengths[i])
    symbols = ids[i, :n] if radix is None else priors.digits(ids[i, :n], radix)
    symbols = np.ascontiguousarray(symbols.reshape(-1), np.int32)
    words = _encode(symbols, *_model(p, v, radix, n))
    header = Header(fmt.version_for(radix), p.kind, tid, p.prior_id, tok.image_size, v, f, n,
                    len(words) // 4, radix)
    out.append(fmt.pack(header, words))
  return out


def read_header(blob: bytes, name: str = "blob") -> Header:
  """The header of a `.jtok` blob (checked: magic, version, CRC); no tokenizer needed."""
  return fmt.parse(blob, name)[0]


def _check_header(tok, h: Header, name: str) -> None:
  k, f, v = priors._token_layout(tok)
  tid = priors.tokenizer_id(tok)
  if h.tokenizer_id != tid:
    raise JtokError(f"{name}: written by another tokenizer (id {h.tokenizer_id.hex()}), this "
                    f"one is {tid.hex()} ({tok.family}); load the tokenizer it was made with")
  radix = priors.token_radix(tok)
  wrong = [(what, got, want) for what, got, want in (
      ("image_size", h.image_size, tok.image_size), ("vocab_size", h.vocab_size, v),
      ("ids_per_token", h.ids_per_token, f)) if got != want]
  if h.radix is not None and h.radix != radix:
    wrong.append(("radix", list(h.radix), None if radix is None else list(radix)))
  if wrong:
    raise JtokError(f"{name}: header disagrees with the tokenizer: " + ", ".join(
        f"{w}={g} (tokenizer: {t})" for w, g, t in wrong))
  if h.radix is None and radix is not None and h.prior == "marginal":
    raise JtokError(f"{name}: a version {h.version} file of atomic ids coded with a per-code "
                    f"marginal prior, but this jaxtok codes this tokenizer's ids as radix "
                    f"{list(radix)} digits and refuses per-code priors for it; decode it with "
                    f"the jaxtok that wrote it, or compress the images again")
  if h.num_tokens > k or (h.num_tokens < k and not tok.supports_prefix):
    raise JtokError(f"{name}: holds {h.num_tokens} tokens; this tokenizer decodes "
                    f"{'1..' if tok.supports_prefix else ''}{k}")


def _prior_for(tok, h: Header, prior: Any, name: str):
  if h.prior == "uniform":
    return priors.UniformPrior()
  if prior is None or prior == "uniform":
    raise JtokError(f"{name}: coded with a marginal prior (id {h.prior_id.hex()}); pass "
                    f"prior=MarginalPrior.load(checkpoint_dir) (or its file)")
  p = priors.resolve(tok, prior)
  if p.prior_id != h.prior_id:
    raise JtokError(f"{name}: coded with marginal prior {h.prior_id.hex()}, the one given is "
                    f"{p.prior_id.hex()}")
  return p


def decompress_tokens(tok, blobs: Sequence[bytes], *, prior: Any = None,
                      names: Sequence[str] | None = None) -> list[np.ndarray]:
  """`.jtok` blobs -> their ids: image i's `[L_i]` (or `[L_i, F]`) int32.

  Args:
    prior: the `MarginalPrior` (or its file) for blobs coded with one; uniform blobs need none.
    names: what to call each blob in errors (e.g. its file); default `blobs[i]`.

  Raises:
    JtokError: a blob that is corrupt, truncated, of an unknown version, for another
      tokenizer or coded with another prior.
  """
  if isinstance(blobs, (bytes, bytearray)):
    raise ValueError("blobs: expected a sequence of blobs (a list of bytes), got one bytes "
                     "object; wrap it in a list")
  if names is not None and len(names) != len(blobs):
    raise ValueError(f"names: expected one name per blob ({len(blobs)}), got {len(names)}")
  out = []
  cache: dict[Any, Any] = {}
  for i, blob in enumerate(blobs):
    name = f"blobs[{i}]" if names is None else str(names[i])
    h, payload = fmt.parse(blob, name)
    _check_header(tok, h, name)
    key = (h.prior, h.prior_id)
    if key not in cache:
      cache[key] = _prior_for(tok, h, prior, name)
    p = cache[key]
    words = np.frombuffer(payload, "<u4").astype(np.uint32)
    dec = constriction.stream.queue.RangeDecoder(words)
    try:
      # The header's radix, not the tokenizer's: a version 1 file (atomic ids) of a radix
      # tokenizer decodes id by id, as it was written.
      model, params = _model(p, h.vocab_size, h.radix, h.num_tokens)
      symbols = dec.decode(model, *(params or (h.num_symbols,)))
    except Exception as e:  # constriction reports exhausted/invalid data as a RuntimeError.
      raise JtokError(f"{name}: payload does not decode ({type(e).__name__}: {e})") from e
    symbols = np.asarray(symbols, np.int64)
    if symbols.size != h.num_symbols or symbols.min() < 0:
      raise JtokError(f"{name}: payload decodes to invalid ids")
    # The coder is deterministic: an intact payload is exactly the coding of what it decodes
    # to. Anything else (extra or edited words that still decode) is refused.
    if _encode(np.ascontiguousarray(symbols, np.int32), model, params) != payload:
      raise JtokError(f"{name}: payload of {len(payload)} bytes is not exactly the coding of "
                      f"the {h.num_symbols} symbols it decodes to (edited or padded)")
    if h.radix is not None:
      symbols = symbols.reshape(h.num_tokens, len(h.radix))
      if (symbols >= np.asarray(h.radix)).any():  # Possible only in a damaged payload.
        raise JtokError(f"{name}: payload decodes to invalid digits")
      symbols = priors.from_digits(symbols, h.radix)
    if symbols.max() >= h.vocab_size:
      raise JtokError(f"{name}: payload decodes to invalid ids")
    symbols = symbols.astype(np.int32)
    out.append(symbols.reshape(h.num_tokens, h.ids_per_token) if h.ids_per_token > 1
               else symbols)
  return out


def compress(tok, images: Any, *, prior: Any = "uniform", num_tokens: int | None = None,
             target: tuple[str, float] | None = None, lpips_weights: Any = None,
             batch_size: int = 32) -> list[bytes]:
  """Images -> one `.jtok` blob per image.

  Args:
    tok: a `jaxtok.Tokenizer` with discrete ids.
    images: `[N, S, S, 3]` uint8 or float in [0, 1].
    prior: "uniform", a `MarginalPrior`, or a prior file / checkpoint directory.
    num_tokens: store only this prefix of every image (ordered tokenizers); default all K.
    target: `(metric, value)` for per-image adaptive length (`Tokenizer.encode_adaptive`);
      exclusive with `num_tokens`. `("bytes", B)` keeps the lengths of most total PSNR whose
      files average at most B bytes (`("lambda", l)`: most PSNR - l * bytes per image), with
      the real file sizes of this prior as the rates.
    lpips_weights: LPIPS weight files, for `target=("lpips", ...)`.
  """
  if target is not None and num_tokens is not None:
    raise ValueError("num_tokens/target: give at most one (a fixed prefix or a quality target)")
  batch_size = interface.check_int(batch_size, "batch_size", lo=1)
  k = tok.token_spec.num_tokens
  if num_tokens is not None:
    num_tokens = interface.check_int(num_tokens, "num_tokens", lo=1 if tok.supports_prefix
                                     else k, hi=k)
  images = tok.check_images(images)
  if target is not None and isinstance(target, (tuple, list)) and target[:1] in (
      ("bytes",), ("lambda",)):
    # Rate-distortion targets: the rate of every image at every length is its real file size
    # with this prior.
    if not tok.supports_prefix:
      raise ValueError(f"target: adaptive length needs a prefix tokenizer; this {tok.family} "
                       f"tokenizer decodes only all {tok.num_tokens} tokens")
    ids = np.concatenate([tok.encode(images[s:s + batch_size])
                          for s in range(0, len(images), batch_size)])
    p = priors.resolve(tok, prior)
    n, k = len(ids), tok.num_tokens
    rates = np.stack([[len(b) for b in compress_tokens(tok, ids, lengths=np.full(n, m),
                                                       prior=p)]
                      for m in range(1, k + 1)], axis=1).astype(np.float64)
    adaptive = tok.encode_adaptive(images, target, lpips_weights=lpips_weights,
                                   batch_size=batch_size, ids=ids, rates=rates)
    return compress_tokens(tok, adaptive.ids, lengths=adaptive.lengths, prior=p)
  if target is not None:
    adaptive = tok.encode_adaptive(images, target, lpips_weights=lpips_weights,
                                   batch_size=batch_size)
    return compress_tokens(tok, adaptive.ids, lengths=adaptive.lengths, prior=prior)
  ids = np.concatenate([tok.encode(images[s:s + batch_size])
                        for s in range(0, len(images), batch_size)])
  if num_tokens is not None:
    ids = ids[:, :int(num_tokens)]
  return compress_tokens(tok, ids, prior=prior)


def decode_groups(tok, ids: Sequence[np.ndarray], batch_size: int = 32) -> np.ndarray:
  """`tok.decode` of per-image id sequences of varying length: `[N, S, S, 3]` float32.

  Images of one length are decoded together, `batch_size` at a time.
  """
  batch_size = interface.check_int(batch_size, "batch_size", lo=1)
  n, s = len(ids), tok.image_size
  out = np.zeros((n, s, s, 3), np.float32)
  lengths = np.array([len(x) for x in ids])
  for length in np.unique(lengths):
    rows = np.flatnonzero(lengths == length)
    for start in range(0, len(rows), batch_size):
      sel = rows[start:start + batch_size]
      out[sel] = tok.decode(np.stack([ids[i] for i in sel]))
  return out


def decompress(tok, blobs: Sequence[bytes], *, prior: Any = None,
               batch_size: int = 32, names: Sequence[str] | None = None) -> np.ndarray:
  """`.jtok` blobs -> images `[N, S, S, 3]` float32 in [0, 1] (see `decompress_tokens`)."""
  batch_size = interface.check_int(batch_size, "batch_size", lo=1)
  return decode_groups(tok, decompress_tokens(tok, blobs, prior=prior, names=names),
                       batch_size)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
  """Writes `data` to `path` through a temp file in the same directory and a rename."""
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  try:
    with open(tmp, "wb") as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


__all__ = ["compress", "compress_tokens", "decode_groups", "decompress", "decompress_tokens",
           "read_header", "write_atomic"]
