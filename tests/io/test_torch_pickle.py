"""The torch-free torch zip-pickle reader (`jaxtok.io.torch_pickle`)."""
import collections
import importlib.util
import pathlib
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from jaxtok.io import torch_pickle

_spec = importlib.util.spec_from_file_location(
    "jaxtok_tests_torch_format", pathlib.Path(__file__).with_name("torch_format.py"))
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)


def _bf16_bits(x):
  return (np.asarray(x, np.float32).view(np.uint32) >> 16).astype(np.uint16)


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
  obj = torch_pickle.read_torch_zip(path)
  assert obj["epoch"] == 3 and obj["lr"] == [0.1]
  sd = torch_pickle.read_checkpoint(path)  # Finds the state dict under "state_dict".
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
  got = torch_pickle.read_checkpoint(tmp_path / "pytorch_model.bin")
  for k, v in sd.items():
    ref = v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
    assert got[k].dtype == ref.dtype and got[k].shape == ref.shape, k
    np.testing.assert_array_equal(got[k], ref, err_msg=k)
  # The torch-backed path agrees.
  via_torch = torch_pickle.read_checkpoint(tmp_path / "pytorch_model.bin", use_torch=True)
  for k in sd:
    np.testing.assert_array_equal(via_torch[k], got[k])


def test_torch_reader_refuses_code_in_pickles(tmp_path):
  path = tmp_path / "evil.bin"
  payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x00\x85R."
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", payload)
  with pytest.raises(ValueError, match=r"refusing to load os\.system"):
    torch_pickle.read_checkpoint(path)


def test_torch_reader_rejects_legacy_and_foreign_files(tmp_path):
  legacy = tmp_path / "legacy.bin"
  legacy.write_bytes(pickle.dumps({"a": 1}, protocol=2))
  with pytest.raises(ValueError, match=r"legacy \(pre-1\.6\) torch file"):
    torch_pickle.read_checkpoint(legacy)
  with pytest.raises(ValueError, match=r"non-zip file"):
    torch_pickle.read_torch_zip(legacy)
  nodict = tmp_path / "list.bin"
  torch_format.save([torch_format.tensor_from_array(np.ones(2, np.float32), "0")], nodict)
  with pytest.raises(ValueError, match=r"to hold a state dict"):
    torch_pickle.read_checkpoint(nodict)
  with pytest.raises(ValueError, match=r"expected an existing checkpoint file"):
    torch_pickle.read_checkpoint(tmp_path / "missing.safetensors")


def test_torchscript_archive_matches_torch_jit_load(tmp_path):
  """One reader for both kinds of zip: a TorchScript module tree and its tensor constants."""
  torch = pytest.importorskip("torch", reason="cross-check against torch.jit.load")

  class Net(torch.nn.Module):

    def __init__(self):
      super().__init__()
      self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
      self.head = torch.nn.Sequential(torch.nn.Linear(4, 2), torch.nn.LayerNorm(2))
      self.register_buffer("count", torch.arange(3))

    def forward(self, x):
      y = self.conv(x).mean((2, 3))
      return self.head(y) + torch.tensor([0.5, -1.5])  # A constant of the traced code.

  torch.manual_seed(0)
  path = tmp_path / "net.pt"
  torch.jit.save(torch.jit.trace(Net().eval(), torch.zeros(1, 3, 8, 8)), str(path))
  tensors, attrs = torch_pickle.read_torchscript(path)
  state = torch.jit.load(str(path), map_location="cpu").state_dict()
  assert set(tensors) == set(state)
  for k, v in state.items():
    assert tensors[k].dtype == v.numpy().dtype, k
    np.testing.assert_array_equal(tensors[k], v.numpy(), err_msg=k)
  assert attrs["training"] is False and attrs["conv.training"] is False
  constants = torch_pickle.read_torch_zip(path, record="constants")
  assert any(isinstance(c, np.ndarray) and np.array_equal(c, [0.5, -1.5]) for c in constants)
  _handmade_checkpoint(tmp_path / "plain.bin")
  with pytest.raises(ValueError, match="TorchScript archive"):
    torch_pickle.read_torchscript(tmp_path / "plain.bin")
  with pytest.raises(ValueError, match="record: expected"):
    torch_pickle.read_torch_zip(path, record="code")


def _strided_checkpoint(path, n_elements, offset, size, stride):
  """A torch zip whose one tensor views a float32 storage of n_elements as given."""
  storage = torch_format.Storage("0", np.arange(n_elements, dtype=np.float32), "FloatStorage")
  torch_format.save({"t": torch_format.Tensor(storage, offset, size, stride)}, path)
  return path


@pytest.mark.parametrize("n, offset, size, stride, match", [
    (3, 0, [3], [-100000], r"negative stride"),  # Segfaulted: read before the storage.
    (8, 7, [8], [-1], r"negative stride"),  # Read 7 values of heap memory before the storage.
    (8, -1, [2], [1], r"storage offset"),
    (8, 0, [-2], [1], r"negative size"),
    (8, 0, [2, 2], [1], r"2 sizes but 1 strides"),
    (8, 0, [4, 4], [2, 1], r"reaches past its storage"),
    # Zero strides over a tiny storage asked numpy for 4 TiB.
    (150, 0, [1 << 20, 1 << 20], [0, 0], r"more elements than its storage"),
])
def test_torch_reader_refuses_views_outside_their_storage(tmp_path, n, offset, size, stride,
                                                          match):
  path = _strided_checkpoint(tmp_path / "bad.bin", n, offset, size, stride)
  with pytest.raises(ValueError, match=match) as info:
    torch_pickle.read_checkpoint(path)
  assert "bad.bin" in str(info.value)


def test_torch_reader_negative_stride_does_not_crash_the_process(tmp_path):
  """The memory-unsafe case end to end, in a subprocess (it used to die with SIGSEGV)."""
  path = _strided_checkpoint(tmp_path / "bad.bin", 3, 0, [3], [-100000])
  proc = subprocess.run(
      [sys.executable, "-c", "import sys; from jaxtok.io import torch_pickle as t\n"
       "try: t.read_checkpoint(sys.argv[1])\nexcept ValueError as e: print(e); sys.exit(3)",
       str(path)], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 3, (proc.returncode, proc.stderr)
  assert "negative stride" in proc.stdout


def test_torch_reader_keeps_legal_zero_stride_views(tmp_path):
  """An expanded view no larger than its storage (torch's expand()) still loads."""
  path = _strided_checkpoint(tmp_path / "ok.bin", 6, 1, [2, 3], [0, 1])
  np.testing.assert_array_equal(torch_pickle.read_checkpoint(path)["t"],
                                [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("corrupt, match", [
    ("missing_storage", r"no storage record"),
    ("truncated_pickle", r"malformed"),
    ("garbage_pickle", r"malformed"),
    ("bad_storage_arg", r"malformed|expected a storage"),
])
def test_torch_reader_malformed_archives_are_value_errors(tmp_path, corrupt, match):
  path = tmp_path / "bad.bin"
  if corrupt == "missing_storage":
    torch_format.save_state_dict({"a": np.ones(3, np.float32)}, path)
    with zipfile.ZipFile(path) as z:
      entries = {n: z.read(n) for n in z.namelist() if n != "archive/data/0"}
    with zipfile.ZipFile(path, "w") as z:
      for n, data in entries.items():
        z.writestr(n, data)
  else:
    payload = {
        "truncated_pickle": b"\x80\x02}q\x00(X\x01\x00\x00",
        "garbage_pickle": b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01K\x02",
        "bad_storage_arg": (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nq\x00"
                            b"(K\x01K\x00K\x01\x85K\x01\x85\x89tR."),
    }[corrupt]
    with zipfile.ZipFile(path, "w") as z:
      z.writestr("archive/data.pkl", payload)
  with pytest.raises(ValueError, match=match) as info:
    torch_pickle.read_torch_zip(path)
  assert "bad.bin" in str(info.value)


def test_use_torch_refusal_is_a_value_error(tmp_path):
  pytest.importorskip("torch", reason="the use_torch=True path needs torch")
  path = tmp_path / "evil.bin"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00echoq\x00\x85R.")
    z.writestr("archive/version", "3\n")
  with pytest.raises(ValueError, match=r"evil\.bin"):
    torch_pickle.read_checkpoint(path, use_torch=True)
