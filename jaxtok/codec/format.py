"""The `.jtok` container: one image's token ids, entropy-coded, behind a small checked header.

Layout of format version 1 (integers little-endian; `varint` = unsigned LEB128):

    offset  size      field
    0       3         magic b"JTK"
    3       1         format version (1)
    4       1         prior kind: 0 uniform, 1 marginal
    5       4         tokenizer id: first 4 bytes of sha256 of the tokenizer identity
                      (family, config, weights; `priors.tokenizer_id`)
    9       4         prior id (marginal only): first 4 bytes of sha256 of the prior's table
    .       varint    image size S (the decoded images are S x S)
    .       varint    vocabulary size V (ids lie in [0, V))
    .       varint    ids per token F (1, or k for factorized / multi-id tokens)
    .       varint    token count L of this image (its prefix length; K for fixed length)
    .       4 * W     payload: W uint32 words of a range coder (`constriction.stream.queue`)
    end-4   4         CRC-32 of every byte before it

The payload codes the L * F ids in token-major order (token 0's F ids, then token 1's, ...),
each with the probability the prior gives its position. A reader refuses anything it cannot
decode exactly: a wrong magic, an unknown version or prior kind, a CRC mismatch (corruption
or truncation), fields that disagree with the tokenizer (id, S, V, F, L > K), or a prior
other than the one the file was written with. Every refusal is a `JtokError` (a ValueError).
"""
from __future__ import annotations

import dataclasses
import struct
import zlib

MAGIC = b"JTK"
FORMAT_VERSION = 1
SUFFIX = ".jtok"
PRIOR_KINDS = {0: "uniform", 1: "marginal"}
PRIOR_CODES = {name: code for code, name in PRIOR_KINDS.items()}
_CRC_BYTES = 4
# magic + version + prior kind + tokenizer id + 4 one-byte varints + crc: no file is shorter.
MIN_SIZE = len(MAGIC) + 1 + 1 + 4 + 4 + _CRC_BYTES


class JtokError(ValueError):
  """A `.jtok` blob that cannot be decoded exactly (bad, truncated, or for another model)."""


@dataclasses.dataclass(frozen=True)
class Header:
  """The fields of a `.jtok` header (see the module docstring)."""
  version: int
  prior: str
  tokenizer_id: bytes
  prior_id: bytes | None
  image_size: int
  vocab_size: int
  ids_per_token: int
  num_tokens: int
  payload_words: int

  @property
  def num_symbols(self) -> int:
    return self.num_tokens * self.ids_per_token

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["tokenizer_id"] = self.tokenizer_id.hex()
    d["prior_id"] = self.prior_id.hex() if self.prior_id is not None else None
    return d


def _varint(n: int) -> bytes:
  if n < 0:
    raise ValueError(f"varint: expected a non-negative int, got {n}")
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
  value = shift = 0
  for i in range(pos, min(len(buf), pos + 5)):  # Fields here fit 35 bits.
    byte = buf[i]
    value |= (byte & 0x7F) << shift
    shift += 7
    if not byte & 0x80:
      return value, i + 1
  raise JtokError(f"blob: truncated or corrupt header field {what!r} at byte {pos}")


def pack(header: Header, words: bytes) -> bytes:
  """Header + payload + CRC-32 (`header.payload_words` is taken from `words`)."""
  if header.prior not in PRIOR_CODES:
    raise ValueError(f"prior: expected one of {sorted(PRIOR_CODES)}, got {header.prior!r}")
  if len(header.tokenizer_id) != 4 or (header.prior == "marginal") != (
      header.prior_id is not None) or (header.prior_id is not None and len(header.prior_id) != 4):
    raise ValueError("header: expected a 4-byte tokenizer id, and a 4-byte prior id exactly "
                     "for the marginal prior")
  if len(words) % 4:
    raise ValueError(f"words: expected whole uint32 words, got {len(words)} bytes")
  out = bytearray(MAGIC)
  out += bytes([FORMAT_VERSION, PRIOR_CODES[header.prior]])
  out += header.tokenizer_id + (header.prior_id or b"")
  for n in (header.image_size, header.vocab_size, header.ids_per_token, header.num_tokens):
    out += _varint(int(n))
  out += words
  out += struct.pack("<I", zlib.crc32(out))
  return bytes(out)


def parse(blob: bytes, name: str = "blob") -> tuple[Header, bytes]:
  """(header, payload bytes) of a `.jtok` blob; `JtokError` unless it is intact."""
  if not isinstance(blob, (bytes, bytearray, memoryview)):
    raise JtokError(f"{name}: expected bytes of a {SUFFIX} file, got {type(blob).__name__}")
  blob = bytes(blob)
  if blob[:len(MAGIC)] != MAGIC:
    raise JtokError(f"{name}: not a {SUFFIX} file (expected magic {MAGIC!r}, got "
                    f"{blob[:len(MAGIC)]!r})")
  if len(blob) < len(MAGIC) + 1:
    raise JtokError(f"{name}: truncated {SUFFIX} file ({len(blob)} bytes)")
  version = blob[len(MAGIC)]
  if version != FORMAT_VERSION:
    raise JtokError(f"{name}: {SUFFIX} format version {version}; this jaxtok reads version "
                    f"{FORMAT_VERSION} only")
  if len(blob) < MIN_SIZE:
    raise JtokError(f"{name}: truncated {SUFFIX} file ({len(blob)} bytes, a valid one has at "
                    f"least {MIN_SIZE})")
  (crc,) = struct.unpack("<I", blob[-_CRC_BYTES:])
  if zlib.crc32(blob[:-_CRC_BYTES]) != crc:
    raise JtokError(f"{name}: checksum mismatch: the {SUFFIX} file is corrupt or truncated "
                    f"({len(blob)} bytes)")
  pos = len(MAGIC) + 1
  kind = blob[pos]
  if kind not in PRIOR_KINDS:
    raise JtokError(f"{name}: unknown prior kind {kind}; expected one of {PRIOR_KINDS}")
  prior = PRIOR_KINDS[kind]
  pos += 1
  tokenizer_id, pos = blob[pos:pos + 4], pos + 4
  prior_id = None
  if prior == "marginal":
    prior_id, pos = blob[pos:pos + 4], pos + 4
  body = blob[:-_CRC_BYTES]
  fields = []
  for what in ("image_size", "vocab_size", "ids_per_token", "num_tokens"):
    value, pos = _read_varint(body, pos, what)
    fields.append(value)
  payload = body[pos:]
  if len(payload) % 4:
    raise JtokError(f"{name}: payload of {len(payload)} bytes is not whole uint32 words")
  s, v, f, n = fields
  if min(s, v, f, n) < 1:
    raise JtokError(f"{name}: header fields must be positive, got image_size={s}, "
                    f"vocab_size={v}, ids_per_token={f}, num_tokens={n}")
  return Header(version, prior, tokenizer_id, prior_id, s, v, f, n, len(payload) // 4), payload


__all__ = ["FORMAT_VERSION", "Header", "JtokError", "MAGIC", "MIN_SIZE", "PRIOR_KINDS",
           "SUFFIX", "pack", "parse"]
