"""Torch-free safetensors reader and writer (`jaxtok.io.safetensors`)."""
import json
import struct

import numpy as np
import pytest

from jaxtok.io import safetensors


def _arrays():
  rng = np.random.default_rng(0)
  return {
      "w": rng.standard_normal((3, 4)).astype(np.float32),
      "b": rng.standard_normal(4).astype(np.float64),
      "h": rng.standard_normal((2, 2)).astype(np.float16),
      "ids": np.arange(-3, 3, dtype=np.int64),
      "i32": np.array([[1, 2]], np.int32),
      "u8": np.array([0, 255], np.uint8),
      "mask": np.array([True, False]),
      "scalar": np.array(7, np.int32),
      "empty": np.zeros((0, 3), np.float32),
  }


def _bf16_bits(x):
  return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def test_safetensors_roundtrip_every_dtype(tmp_path):
  arrays = _arrays()
  safetensors.write_safetensors(tmp_path / "a.safetensors", arrays, {"note": "x"})
  back = safetensors.read_safetensors(tmp_path / "a.safetensors")
  assert back.keys() == arrays.keys()
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v)
  assert safetensors.read_safetensors_metadata(tmp_path / "a.safetensors") == {"note": "x"}
  # The header is 8-byte aligned, as the format asks.
  (n,) = struct.unpack("<Q", (tmp_path / "a.safetensors").read_bytes()[:8])
  assert n % 8 == 0


def test_safetensors_interop_with_reference_library(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  arrays = {k: v for k, v in _arrays().items()}
  st.save_file(arrays, str(tmp_path / "ref.safetensors"))
  back = safetensors.read_safetensors(tmp_path / "ref.safetensors")
  for k, v in arrays.items():
    np.testing.assert_array_equal(back[k], v)
  safetensors.write_safetensors(tmp_path / "ours.safetensors", arrays)
  ref = st.load_file(str(tmp_path / "ours.safetensors"))
  for k, v in arrays.items():
    assert ref[k].dtype == v.dtype
    np.testing.assert_array_equal(ref[k], v)


def _raw_safetensors(path, header, data=b""):
  head = json.dumps(header).encode()
  path.write_bytes(struct.pack("<Q", len(head)) + head + data)
  return path


def test_safetensors_bf16_is_widened(tmp_path):
  values = np.array([[1.5, -2.25], [3.0e-3, 1e4]], np.float32)
  bits = _bf16_bits(values)
  path = _raw_safetensors(tmp_path / "bf.safetensors",
                          {"x": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]}},
                          bits.tobytes())
  out = safetensors.read_safetensors(path)["x"]
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, (bits.astype(np.uint32) << 16).view(np.float32))
  np.testing.assert_allclose(out, values, rtol=1e-2)


def _f32(offsets, shape=(1,), dtype="F32"):
  return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b"\x01\x02"), r"header too small"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10 ** 6) + b"{}"), r"not a valid safetensors"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"nope"), r"not a valid safetensors"),
    (lambda p: _raw_safetensors(p, {"x": _f32([0, 8], [4])}, b"\0" * 8),
     r"invalid shape, data type, or offset"),
    (lambda p: _raw_safetensors(p, {"x": _f32([0, 8], [1], "C64")}, b"\0" * 8),
     r"has dtype 'C64'"),
    # Issue 24 item 5: each of these was accepted or escaped as a non-ValueError.
    (lambda p: _raw_safetensors(p, {"a": _f32([0, 4]), "b": _f32([0, 4])}, b"\0" * 4),
     r"invalid offset"),  # Two tensors over the same bytes.
    (lambda p: _raw_safetensors(p, {"a": {"shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4),
     r"missing field `dtype`"),
    (lambda p: _raw_safetensors(p, {"a": _f32([0, 4, 4])}, b"\0" * 4), r"invalid length 3"),
    (lambda p: _raw_safetensors(p, {"a": _f32([0, 4], [-1])}, b"\0" * 4), r"integer `-1`"),
    (lambda p: _raw_safetensors(p, {"__metadata__": [1], "a": _f32([0, 4])}, b"\0" * 4),
     r"expected a map"),
    (lambda p: _raw_safetensors(p, {"a": _f32([0, 4], [1 << 40, 1 << 40])}, b"\0" * 4),
     r"overflow"),
])
def test_safetensors_malformed_files_raise(tmp_path, make, match):
  path = tmp_path / "bad.safetensors"
  make(path)
  with pytest.raises(ValueError, match=match) as info:
    safetensors.read_safetensors(path)
  assert "bad.safetensors" in str(info.value)
  if "C64" not in match:
    with pytest.raises(ValueError, match=match):
      safetensors.read_safetensors_metadata(path)


def test_safetensors_digest_catches_a_relabelled_dtype(tmp_path):
  """F32 -> I32 keeps every size and offset valid; only jaxtok's digest can tell."""
  path = tmp_path / "w.safetensors"
  safetensors.write_safetensors(path, {"w": np.array([1.5, -2.0], np.float32)})
  blob = path.read_bytes()
  assert blob.count(b'"F32"') == 1
  path.write_bytes(blob.replace(b'"F32"', b'"I32"'))
  with pytest.raises(ValueError, match=r"w\.safetensors.*digest"):
    safetensors.read_safetensors(path)
  with pytest.raises(ValueError, match=r"reserved"):
    safetensors.write_safetensors(path, {}, {safetensors.DIGEST_KEY: "x"})


def test_safetensors_keep_reads_only_the_selected_tensors(tmp_path):
  arrays = _arrays()
  path = tmp_path / "all.safetensors"
  safetensors.write_safetensors(path, arrays)
  out = safetensors.read_safetensors(path, keep=lambda name: name in ("w", "ids", "empty"))
  assert set(out) == {"w", "ids", "empty"}
  for name, value in out.items():
    np.testing.assert_array_equal(value, arrays[name])
  assert safetensors.read_safetensors(path, keep=lambda name: False) == {}
