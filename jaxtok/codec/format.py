"""The `.jtok` container: one image's token ids, entropy-coded, behind a small checked header.

Layout of format versions 1 and 2 (integers little-endian; `varint` = unsigned LEB128):

    offset  size      field
    0       3         magic b"JTK"
    3       1         format version: 1 (atomic ids) or 2 (radix ids, coded as digits)
    4       1         prior kind: 0 uniform, 1 marginal
    5       4         tokenizer id: first 4 bytes of sha256 of the tokenizer identity
                      (family, config, weights; `priors.tokenizer_id`)
    9       4         prior id (marginal only): first 4 bytes of sha256 of the prior's table
    .       varint    image size S (the decoded images are S x S)
    .       varint    vocabulary size V (ids lie in [0, V))
    .       varint    ids per token F (1, or k for factorized / multi-id tokens)
    .       varint    token count L of this image (its prefix length; K for fixed length)
    .       varint    version 2 only: digit count d, then d varints radix[0..d-1] (F = 1)
    .       4 * W     payload: W uint32 words of a range coder (`constriction.stream.queue`)
    end-4   4         CRC-32 of every byte before it

Version 1 payloads code the L * F ids in token-major order (token 0's F ids, then token 1's,
...), each with the probability the prior gives its position. Version 2 (tokenizers whose
`TokenSpec.radix` is set: FSQ) codes each id as its d mixed-radix digits (channel 0 the least
significant; digit j in [0, radix[j])), token-major too (token 0's d digits, then token 1's),
so that any prefix of tokens is a prefix of the symbols. Files of atomic ids are written as
version 1, byte for byte as before version 2 existed. A reader refuses anything it cannot
decode exactly: a wrong magic, an unknown version or prior kind, a CRC mismatch (corruption
or truncation), fields that disagree with the tokenizer (id, S, V, F, radix, L > K), or a prior
other than the one the file was written with. Every refusal is a `JtokError` (a ValueError).
"""
from __future__ import annotations

import dataclasses
import math
import struct
import zlib

MAGIC = b"JTK"
FORMAT_VERSION = 2  # The newest; a file takes the lowest version that holds it (version_for).
VERSIONS = (1, 2)
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
  radix: tuple[int, ...] | None = None

  @property
  def num_symbols(self) -> int:
    """How many symbols the payload codes: ids (version 1) or digits (version 2)."""
    per_id = 1 if self.radix is None else len(self.radix)
    return self.num_tokens * self.ids_per_token * per_id

  def as_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["tokenizer_id"] = self.tokenizer_id.hex()
    d["prior_id"] = self.prior_id.hex() if self.prior_id is not None else None
    d["radix"] = list(self.radix) if self.radix is not None else None
    return d


def version_for(radix: tuple[int, ...] | None) -> int:
  """The format version of a file with these ids: 1 atomic, 2 radix digits."""
  return 1 if radix is None else 2


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
  radix = header.radix
  if header.version != version_for(radix) or (radix is not None and (
      not radix or min(radix) < 2 or header.ids_per_token != 1)):
    raise ValueError(f"header: expected version 1 without a radix, or version 2 with a radix "
                     f"of levels >= 2 and one id per token; got version {header.version}, "
                     f"radix {radix}, ids_per_token {header.ids_per_token}")
  out = bytearray(MAGIC)
  out += bytes([header.version, PRIOR_CODES[header.prior]])
  out += header.tokenizer_id + (header.prior_id or b"")
  fields = [header.image_size, header.vocab_size, header.ids_per_token, header.num_tokens]
  if radix is not None:
    fields += [len(radix), *radix]
  for n in fields:
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
  if version not in VERSIONS:
    raise JtokError(f"{name}: {SUFFIX} format version {version}; this jaxtok reads versions "
                    f"{', '.join(map(str, VERSIONS))}")
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
  s, v, f, n = fields
  radix = None
  if version == 2:
    d, pos = _read_varint(body, pos, "radix length")
    if not 1 <= d <= 64:
      raise JtokError(f"{name}: header field radix length must be in [1, 64], got {d}")
    radix = []
    for j in range(d):
      value, pos = _read_varint(body, pos, f"radix[{j}]")
      radix.append(value)
    radix = tuple(radix)
    if min(radix) < 2 or math.prod(radix) != v or f != 1:
      raise JtokError(f"{name}: header radix {list(radix)} must be levels >= 2 with product "
                      f"vocab_size={v} and ids_per_token=1 (got {f})")
  payload = body[pos:]
  if len(payload) % 4:
    raise JtokError(f"{name}: payload of {len(payload)} bytes is not whole uint32 words")
  if min(s, v, f, n) < 1:
    raise JtokError(f"{name}: header fields must be positive, got image_size={s}, "
                    f"vocab_size={v}, ids_per_token={f}, num_tokens={n}")
  return Header(version, prior, tokenizer_id, prior_id, s, v, f, n, len(payload) // 4,
                radix), payload


__all__ = ["FORMAT_VERSION", "Header", "JtokError", "MAGIC", "MIN_SIZE", "PRIOR_KINDS",
           "SUFFIX", "VERSIONS", "pack", "parse", "version_for"]
