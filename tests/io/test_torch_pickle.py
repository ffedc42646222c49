"""The torch-free torch zip-pickle reader (`jaxtok.io.torch_pickle`)."""
import collections
import importlib.util
import pathlib
import pickle
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
