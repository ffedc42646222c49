"""Seeded fuzzing of every reader of untrusted bytes (issue 24): a torch zip, a safetensors
file, a checkpoint's config.json and a `.jtok` blob, each mutated 500 times (bit flips, byte
overwrites, truncations, insertions, deletions, duplicated ranges). Every load must either
give exactly the original values or raise a ValueError (or subclass) whose message names the
file; any other exception, a crash of the process or a silently different value fails.

"Exactly the original values": the same tensor names, dtypes, shapes and bits; for the
safetensors file also every original metadata entry; for config.json the same family and
config dataclass; for `.jtok` the same token ids.
"""
import collections
import importlib.util
import json
import pathlib

import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import api, codec
from jaxtok.io import safetensors, torch_pickle
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece

_spec = importlib.util.spec_from_file_location(
    "jaxtok_tests_torch_format_fuzz", pathlib.Path(__file__).with_name("torch_format.py"))
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)

TRIALS = 500


def _mutate(rng: np.random.Generator, blob: bytes) -> bytes:
  """One random damage of `blob` (never the identity on purpose; it may still be harmless)."""
  b = bytearray(blob)
  n = len(b)
  kind = rng.integers(6)
  i = int(rng.integers(n))
  if kind == 0:  # Flip one bit.
    b[i] ^= 1 << int(rng.integers(8))
  elif kind == 1:  # Overwrite 1-8 bytes with random or "interesting" values.
    k = int(rng.integers(1, 9))
    fill = rng.choice([rng.integers(0, 256, k), np.full(k, 0), np.full(k, 255),
                       np.full(k, ord("9")), np.full(k, ord("-"))])
    b[i:i + k] = bytes(int(x) for x in fill)[:max(0, n - i)]
  elif kind == 2:  # Truncate.
    del b[i:]
  elif kind == 3:  # Insert random bytes.
    b[i:i] = bytes(int(x) for x in rng.integers(0, 256, int(rng.integers(1, 9))))
  elif kind == 4:  # Delete a range.
    del b[i:i + int(rng.integers(1, 17))]
  else:  # Duplicate a range.
    j = min(n, i + int(rng.integers(1, 33)))
    b[j:j] = b[i:j]
  return bytes(b)


def _fuzz(rng, blob, path, load, same):
  """Writes TRIALS mutants of `blob` to `path`; returns the problems found."""
  problems, outcomes = [], collections.Counter()
  for t in range(TRIALS):
    mutant = _mutate(rng, blob)
    path.write_bytes(mutant)
    try:
      got = load(path)
    except ValueError as e:
      if path.name not in str(e):
        problems.append(f"trial {t}: {type(e).__name__} without the file name: {e}")
      outcomes["refused"] += 1
      continue
    except Exception as e:  # Exactly what the fuzz test looks for.
      problems.append(f"trial {t}: {type(e).__name__}: {str(e)[:200]}")
      continue
    if not same(got):
      problems.append(f"trial {t}: loaded a silently different value")
    outcomes["same"] += 1
  assert outcomes["refused"] > TRIALS // 2, outcomes  # The mutations really damage files.
  return problems


def _arrays():
  rng = np.random.default_rng(0)
  return {"w": rng.standard_normal((3, 4)).astype(np.float32),
          "ids": np.arange(-3, 3, dtype=np.int64),
          "half": rng.standard_normal(5).astype(np.float16),
          "mask": np.array([True, False, True]),
          "scalar": np.array(7, np.int32)}


def _same_arrays(want):
  def same(got):
    return got.keys() == want.keys() and all(
        got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].tobytes() == v.tobytes()
        for k, v in want.items())
  return same


def test_fuzz_torch_zip(tmp_path):
  want = _arrays()
  path = torch_format.save_state_dict(want, tmp_path / "orig.bin")
  problems = _fuzz(np.random.default_rng(1), path.read_bytes(), tmp_path / "victim.bin",
                   torch_pickle.read_checkpoint, _same_arrays(want))
  assert not problems, problems[:10]


def test_fuzz_safetensors(tmp_path):
  want = _arrays()
  meta = {"note": "x", "key_impls": "{}"}
  safetensors.write_safetensors(tmp_path / "orig.safetensors", want, meta)
  same_arrays = _same_arrays(want)

  def load(path):
    return safetensors.read_safetensors(path), safetensors.read_safetensors_metadata(path)

  def same(got):
    arrays, got_meta = got
    return same_arrays(arrays) and all(got_meta.get(k) == v for k, v in meta.items())
  problems = _fuzz(np.random.default_rng(2), (tmp_path / "orig.safetensors").read_bytes(),
                   tmp_path / "victim.safetensors", load, same)
  assert not problems, problems[:10]


_SMALL = dict(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32, enc_depth=1,
              enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2, num_latent_tokens=4,
              token_size=4, codebook_size=32, head="pixel", legacy_projection=False,
              use_l2_norm=False, tail_token_drop=True)


@pytest.fixture(scope="module")
def tok():
  return jaxtok.Tokenizer(OneDPiece(TiTokConfig(**_SMALL), rngs=nnx.Rngs(0)))


def test_fuzz_config_json(tok, tmp_path):
  ckpt = jaxtok.save(tok, tmp_path / "ck")
  want = api.read_config(ckpt)
  blob = (ckpt / "config.json").read_bytes()
  json.loads(blob)
  problems = _fuzz(np.random.default_rng(3), blob, ckpt / "config.json",
                   lambda p: api.read_config(p.parent), lambda got: got == want)
  assert not problems, problems[:10]


def test_fuzz_jtok(tok, tmp_path):
  images = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
  blob = codec.compress(tok, images)[0]
  want = codec.decompress_tokens(tok, [blob])[0]

  def load(path):
    return codec.decompress_tokens(tok, [path.read_bytes()], names=[str(path)])[0]
  problems = _fuzz(np.random.default_rng(4), blob, tmp_path / "victim.jtok", load,
                   lambda got: np.array_equal(got, want) and got.dtype == want.dtype)
  assert not problems, problems[:10]
