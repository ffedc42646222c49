"""Tests of jaxtok.nets.perceptual: LPIPS architecture and weight loading, Inception."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.nets import inception
from jaxtok.nets import perceptual as P

# torchvision vgg16 feature indices of the convs, with (in, out) channels.
_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256),
          (12, 256, 256), (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512),
          (24, 512, 512), (26, 512, 512), (28, 512, 512)]


def _torch_layout_weights(seed=0):
  """Random weights laid out as torchvision's vgg16 + lpips' vgg.pth state dicts."""
  rng = np.random.default_rng(seed)
  vgg = {}
  for i, cin, cout in _CONVS:
    vgg[f"features.{i}.weight"] = rng.normal(0, np.sqrt(2 / (9 * cin)),
                                             (cout, cin, 3, 3)).astype(np.float32)
    vgg[f"features.{i}.bias"] = rng.normal(0, 0.1, (cout,)).astype(np.float32)
  # torchvision also has classifier weights: the converter must ignore them.
  vgg["classifier.0.weight"] = np.zeros((4, 4), np.float32)
  lin = {f"lin{k}.model.1.weight": rng.uniform(0, 1, (1, c, 1, 1)).astype(np.float32)
         for k, c in enumerate(P.LPIPS_CHANNELS)}
  return vgg, lin


def _np_lpips(vgg, lin, x0, x1):
  """Independent float64 numpy LPIPS on NCHW arrays, from torch-layout weights."""
  shift = np.array(P.LPIPS_SHIFT)[None, :, None, None]
  scale = np.array(P.LPIPS_SCALE)[None, :, None, None]

  def conv(x, w, b):  # 3x3, padding 1, NCHW / OIHW.
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[2:]
    out = np.zeros((x.shape[0], w.shape[0], h, wd))
    for dy in range(3):
      for dx in range(3):
        out += np.einsum("bihw,oi->bohw", xp[:, :, dy:dy + h, dx:dx + wd], w[:, :, dy, dx])
    return out + b[None, :, None, None]

  def feats(x):
    x = (np.transpose(x, (0, 3, 1, 2)) * 2 - 1 - shift) / scale
    taps = []
    for i, _, _ in _CONVS:
      if i in (5, 10, 17, 24):
        b, c, h, w = x.shape
        x = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2).max((3, 5))
      x = np.maximum(conv(x, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"]), 0)
      if i in (2, 7, 14, 21, 28):
        taps.append(x)
    return taps

  total = 0.0
  for k, (f0, f1) in enumerate(zip(feats(x0), feats(x1))):
    n0 = f0 / (np.sqrt((f0 ** 2).sum(1, keepdims=True)) + 1e-10)
    n1 = f1 / (np.sqrt((f1 ** 2).sum(1, keepdims=True)) + 1e-10)
    w = lin[f"lin{k}.model.1.weight"].reshape(-1)
    total = total + np.einsum("bchw,c->bhw", (n0 - n1) ** 2, w).mean((1, 2))
  return total


@pytest.fixture(scope="module")
def lpips_fn():
  # Random weights drawn with numpy: building them with jax.random costs far more here.
  model = P.LPIPS.from_params(P.convert_torch_lpips(*_torch_layout_weights(1)))
  return model, nnx.jit(lambda m, a, b: m(a, b))


def test_lpips_random_weights_identity_symmetry_positivity_grad(lpips_fn):
  model, fn = lpips_fn
  a = jax.random.uniform(jax.random.key(0), (2, 16, 16, 3))
  b = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3))
  d_aa, d_ab, d_ba = fn(model, a, a), fn(model, a, b), fn(model, b, a)
  assert d_ab.shape == (2,) and d_ab.dtype == jnp.float32
  np.testing.assert_allclose(d_aa, 0.0, atol=1e-6)
  np.testing.assert_allclose(d_ab, d_ba, rtol=1e-6)
  assert np.all(d_ab > 0)
  # Closer images are closer.
  d_near = fn(model, a, a + 0.01 * (b - a))
  assert np.all(d_near < d_ab)
  grad = nnx.jit(lambda m, x: jax.grad(lambda x: jnp.mean(m(a, x)))(x))(
      model, b.astype(jnp.bfloat16))
  assert np.all(np.isfinite(np.asarray(grad, np.float32)))
  assert float(jnp.abs(grad.astype(jnp.float32)).sum()) > 0
  with pytest.raises(ValueError, match="x1"):
    model(a, b[:, :8])
  with pytest.raises(ValueError, match="H, W >= 16"):
    model(a[:, :8, :8], b[:, :8, :8])


def test_lpips_weight_loading_matches_numpy_reference(tmp_path):
  vgg, lin = _torch_layout_weights()
  params = P.convert_torch_lpips(vgg, lin)
  assert params["vgg.conv0.kernel"].shape == (3, 3, 3, 64)
  path = tmp_path / "lpips_vgg.npz"
  P.save_lpips_weights(path, params)
  model = P.LPIPS.from_file(path)
  rng = np.random.default_rng(3)
  x0 = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  x1 = rng.uniform(size=(2, 16, 16, 3)).astype(np.float32)
  got = nnx.jit(lambda m, a, b: m(a, b))(model, jnp.asarray(x0), jnp.asarray(x1))
  expected = _np_lpips(vgg, lin, x0.astype(np.float64), x1.astype(np.float64))
  np.testing.assert_allclose(got, expected, rtol=1e-4)
  # lpips' own full-model keys (net.slice*) give the same weights.
  slices = {(0, 2): 1, (5, 7): 2, (10, 12, 14): 3, (17, 19, 21): 4, (24, 26, 28): 5}
  net = {}
  for key, value in vgg.items():
    if key.startswith("features."):
      i = int(key.split(".")[1])
      k = next(s for idx, s in slices.items() if i in idx)
      net[f"net.slice{k}.{i}.{key.split('.')[2]}"] = value
  lin0 = {k.replace("model.1", "model.0"): v for k, v in lin.items()}  # No-dropout layout.
  again = P.convert_torch_lpips(net, lin0)
  for key in params:
    np.testing.assert_array_equal(params[key], again[key])


def test_lpips_weight_file_errors(tmp_path):
  vgg, lin = _torch_layout_weights()
  with pytest.raises(ValueError, match="lin"):
    P.convert_torch_lpips(vgg)  # No lin layers.
  bad = tmp_path / "other.npz"
  np.savez(bad, x=np.zeros(3))
  with pytest.raises(ValueError, match="not a jaxtok LPIPS file"):
    P.load_lpips_weights(bad)
  with pytest.raises(ValueError, match="not a file"):
    P.load_lpips_weights(tmp_path / "missing.npz")
  params = P.convert_torch_lpips(vgg, lin)
  params["lin2"] = params["lin2"][:5]
  with pytest.raises(ValueError, match="lin2"):
    P.LPIPS.from_params(params)
  pth = tmp_path / "vgg.pth"
  try:
    import torch  # noqa: PLC0415  (optional: both branches are tested)
  except ImportError:
    pth.write_bytes(b"not read")
    with pytest.raises(ValueError, match="torch"):
      P.load_lpips_weights(pth)
  else:  # With torch installed, .pth files are read directly.
    torch.save({k: torch.from_numpy(v) for k, v in {**vgg, **lin}.items()}, pth)
    loaded = P.load_lpips_weights(pth)
    np.testing.assert_array_equal(loaded["lin1"], lin["lin1.model.1.weight"].reshape(-1))


def test_inception_perceptual_random_network():
  net = inception.InceptionV3FID(rngs=nnx.Rngs(0))
  model = P.InceptionPerceptual(network=net, size=75, taps=("mixed_2", "mixed_7"))
  fn = nnx.jit(lambda m, a, b: m(a, b))
  a = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  b = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  d_ab = fn(model, a, b)
  assert d_ab.shape == (2,) and np.all(d_ab > 0)
  np.testing.assert_allclose(fn(model, a, a), 0.0, atol=1e-7)
  np.testing.assert_allclose(fn(model, b, a), d_ab, rtol=1e-5)
  with pytest.raises(ValueError, match="size"):
    P.InceptionPerceptual(network=net, size=32)
  with pytest.raises(ValueError, match="taps"):
    P.InceptionPerceptual(network=net, taps=("conv",))
