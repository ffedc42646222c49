"""Torch-free checkpoint readers: safetensors and torch zip-pickle files."""
import collections
import importlib.util
import json
import pathlib
import pickle
import struct
import zipfile

import numpy as np
import pytest

from jaxtok.io import readers

_spec = importlib.util.spec_from_file_location(
    "jaxtok_tests_torch_format", pathlib.Path(__file__).with_name("torch_format.py"))
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)


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


# ------------------------------------------------------------------------ safetensors


def test_safetensors_roundtrip_every_dtype(tmp_path):
  arrays = _arrays()
  readers.write_safetensors(tmp_path / "a.safetensors", arrays, {"note": "x"})
  back = readers.read_safetensors(tmp_path / "a.safetensors")
  assert back.keys() == arrays.keys()
  for k, v in arrays.items():
    assert back[k].dtype == v.dtype and back[k].shape == v.shape, k
    np.testing.assert_array_equal(back[k], v)
  assert readers.read_safetensors_metadata(tmp_path / "a.safetensors") == {"note": "x"}
  # The header is 8-byte aligned, as the format asks.
  (n,) = struct.unpack("<Q", (tmp_path / "a.safetensors").read_bytes()[:8])
  assert n % 8 == 0


def test_safetensors_interop_with_reference_library(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  arrays = {k: v for k, v in _arrays().items()}
  st.save_file(arrays, str(tmp_path / "ref.safetensors"))
  back = readers.read_safetensors(tmp_path / "ref.safetensors")
  for k, v in arrays.items():
    np.testing.assert_array_equal(back[k], v)
  readers.write_safetensors(tmp_path / "ours.safetensors", arrays)
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
  out = readers.read_safetensors(path)["x"]
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, (bits.astype(np.uint32) << 16).view(np.float32))
  np.testing.assert_allclose(out, values, rtol=1e-2)


@pytest.mark.parametrize("make, match", [
    (lambda p: p.write_bytes(b"\x01\x02"), r"path: expected a safetensors file"),
    (lambda p: p.write_bytes(struct.pack("<Q", 10 ** 6) + b"{}"), r"does not fit"),
    (lambda p: p.write_bytes(struct.pack("<Q", 4) + b"nope"), r"unreadable safetensors JSON"),
    (lambda p: _raw_safetensors(p, {"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}},
                                b"\0" * 8), r"data_offsets \[0, 8\] that do not hold \[4\]"),
    (lambda p: _raw_safetensors(p, {"x": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}},
                                b"\0" * 8), r"has dtype 'C64'"),
])
def test_safetensors_malformed_files_raise(tmp_path, make, match):
  path = tmp_path / "bad.safetensors"
  make(path)
  with pytest.raises(ValueError, match=match):
    readers.read_safetensors(path)


# --------------------------------------------------------------- torch zip-pickle files


def _handmade_checkpoint(path):
  """A torch.save-format file with the cases the reader must get right."""
  rng = np.random.default_rng(1)
  base = rng.standard_normal((4, 3)).astype(np.float32)
  shared = torch_format.tensor_from_array(base, "0")
  # A transposed (non-contiguous) view and an offset row view of the SAME storage.
  transposed = torch_format.Tensor(shared.storage, 0, [3, 4], [1, 3])
  row2 = torch_format.Tensor(shared.storage, 6, [3], [1])
  bf = rng.standard_normal(5).astype(np.float32)
  sd = collections.OrderedDict(
      w=shared, wt=transposed, row2=row2,
      ids=torch_format.tensor_from_array(np.arange(6, dtype=np.int64).reshape(2, 3), "1"),
      half=torch_format.tensor_from_array(np.array([0.5, -1.0], np.float16), "2"),
      bf=torch_format.tensor_from_array(bf, "3", bf16=True),
      flag=torch_format.tensor_from_array(np.array([True, False, True]), "4"),
      scalar=torch_format.tensor_from_array(np.array(3.0, np.float32), "5"))
  torch_format.save({"state_dict": sd, "epoch": 3, "lr": [0.1]}, path)
  expect = {"w": base, "wt": base.T, "row2": base[2], "ids": np.arange(6).reshape(2, 3),
            "half": np.array([0.5, -1.0], np.float16),
            "bf": (_bf16_bits(bf).astype(np.uint32) << 16).view(np.float32),
            "flag": np.array([True, False, True]), "scalar": np.array(3.0, np.float32)}
  return expect


def test_torch_free_reader_on_handmade_file(tmp_path):
  path = tmp_path / "model.bin"
  expect = _handmade_checkpoint(path)
  obj = readers.read_torch_zip(path)
  assert obj["epoch"] == 3 and obj["lr"] == [0.1]
  sd = readers.read_checkpoint(path)  # Finds the state dict under "state_dict".
  assert sd.keys() == expect.keys()
  for k, v in expect.items():
    assert sd[k].dtype == np.asarray(v).dtype and sd[k].shape == np.shape(v), k
    np.testing.assert_array_equal(sd[k], v, err_msg=k)
  assert sd["wt"].flags["C_CONTIGUOUS"] and sd["wt"].flags["OWNDATA"]


def test_handmade_file_is_what_torch_writes(tmp_path):
  """torch.load reads the handmade files (so the helper above is a faithful stand-in)."""
  torch = pytest.importorskip("torch")
  expect = _handmade_checkpoint(tmp_path / "model.bin")
  sd = torch.load(tmp_path / "model.bin", map_location="cpu", weights_only=True)["state_dict"]
  for k, v in expect.items():
    np.testing.assert_array_equal(sd[k].float().numpy() if k == "bf" else sd[k].numpy(), v)


def test_torch_free_reader_on_torch_save(tmp_path):
  torch = pytest.importorskip("torch")
  g = torch.Generator().manual_seed(0)
  base = torch.randn(4, 6, generator=g)
  sd = {"a": base, "t": base.t(), "slice": base[1:3, ::2], "long": torch.arange(7),
        "bf": torch.randn(3, 2, generator=g).to(torch.bfloat16),
        "half": torch.randn(2, generator=g).half(), "bool": torch.tensor([True, False]),
        "param": torch.nn.Parameter(torch.ones(2, 2)), "scalar": torch.tensor(2.5),
        "linear": torch.nn.Linear(3, 2).weight.detach()}
  torch.save(sd, tmp_path / "pytorch_model.bin")
  got = readers.read_checkpoint(tmp_path / "pytorch_model.bin")
  for k, v in sd.items():
    ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
    assert got[k].dtype == ref.dtype and got[k].shape == ref.shape, k
    np.testing.assert_array_equal(got[k], ref, err_msg=k)
  # The torch-backed path agrees.
  via_torch = readers.read_checkpoint(tmp_path / "pytorch_model.bin", use_torch=True)
  for k in sd:
    np.testing.assert_array_equal(via_torch[k], got[k])


def test_torch_reader_refuses_code_in_pickles(tmp_path):
  path = tmp_path / "evil.bin"
  payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x00\x85R."
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload)
  with pytest.raises(ValueError, match=r"refusing to load os\.system"):
    readers.read_checkpoint(path)


def test_torch_reader_rejects_legacy_and_foreign_files(tmp_path):
  legacy = tmp_path / "legacy.bin"
  legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
  with pytest.raises(ValueError, match=r"legacy \(pre-1\.6\) torch file"):
    readers.read_checkpoint(legacy)
  with pytest.raises(ValueError, match=r"non-zip file"):
    readers.read_torch_zip(legacy)
  nodict = tmp_path / "list.bin"
  torch_format.save([torch_format.tensor_from_array(np.ones(2, np.float32), "0")], nodict)
  with pytest.raises(ValueError, match=r"to hold a state dict"):
    readers.read_checkpoint(nodict)
  with pytest.raises(ValueError, match=r"expected an existing checkpoint file"):
    readers.read_checkpoint(tmp_path / "missing.safetensors")
