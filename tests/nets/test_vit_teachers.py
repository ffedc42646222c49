"""DINOv2 / CLIP teacher ports vs the `transformers` PyTorch models (issue 10 item 2).

Each case builds the `transformers` model from a small config (and the published DINOv2-S/14,
CLIP ViT-B/16 and ViT-L/14 shapes at depth 1), overwrites every parameter with random values
(so no bias, norm or layer scale sits at its identity init), writes it with `save_pretrained`
(real `config.json` + `model.safetensors`), loads it with `jaxtok.nets.vit` / `teachers` and
compares the features within 1e-4 (float32). Nothing is downloaded.
"""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.configs import fqgan as fqgan_configs
from jaxtok.io.safetensors import read_safetensors, write_safetensors
from jaxtok.nets import teachers, vit
from jaxtok.trainers import frozen as frozen_lib

TOL = dict(rtol=1e-4, atol=1e-4)


@nnx.jit
def _apply(module, x):
  return module(x)


@nnx.jit
def _input_grad(teacher, x):
  return jax.grad(lambda x: (lambda o: jnp.sum(o.cls) + jnp.sum(o.patches))(teacher(x)))(x)


def _torch():
  import torch  # noqa: PLC0415  (the `torch` extra; heavy: lazy by design)
  import transformers  # noqa: PLC0415  (the `torch` extra; heavy: lazy by design)
  return torch, transformers


def _randomize(model, seed: int) -> None:
  """Every parameter: weights N(0, 1/fan_in), norms / layer scales 1 + N(0, 0.2^2), the rest
  (biases, CLS, positions) N(0, 0.2^2) -- away from every identity initialisation."""
  torch, _ = _torch()
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      r = torch.randn(p.shape, generator=g)
      if p.ndim >= 2 and "position" not in name and "token" not in name:
        p.copy_(r / np.sqrt(np.prod(p.shape[1:])))
      elif name.endswith("lambda1") or ("norm" in name and name.endswith("weight")):
        p.copy_(1 + 0.2 * r)
      else:
        p.copy_(0.2 * r)


def _save(model, path, seed: int):
  _randomize(model, seed)
  model.eval()
  model.save_pretrained(path)
  return model


def _dinov2(tmp_path_factory, name: str, seed: int, **cfg):
  _, tf = _torch()
  path = tmp_path_factory.mktemp(name)
  return _save(tf.Dinov2Model(tf.Dinov2Config(**cfg)), path, seed), path


def _clip(tmp_path_factory, name: str, seed: int, whole: bool = False, **cfg):
  """A `CLIPVisionModel` (or, `whole`, a `CLIPModel` as the Hub files hold) -> (vision, dir)."""
  _, tf = _torch()
  path = tmp_path_factory.mktemp(name)
  if whole:
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, vocab_size=64, bos_token_id=0, eos_token_id=1,
                pad_token_id=1)
    model = _save(tf.CLIPModel(tf.CLIPConfig(vision_config=cfg, text_config=text)), path, seed)
    return model.vision_model, path
  return _save(tf.CLIPVisionModel(tf.CLIPVisionConfig(**cfg)), path, seed), path


SMALL_DINO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, patch_size=7,
                  image_size=28, mlp_ratio=4)
SMALL_CLIP = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                  num_attention_heads=4, patch_size=7, image_size=28)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  """{case: (torch model, save_pretrained dir)}."""
  torch, _ = _torch()
  torch.set_num_threads(1)
  out = {
      "dinov2_small": _dinov2(tmp_path_factory, "d", 1, **SMALL_DINO),
      "dinov2_swiglu": _dinov2(tmp_path_factory, "ds", 2, use_swiglu_ffn=True,
                               layerscale_value=0.5, **SMALL_DINO),
      # facebook/dinov2-small's shape (its config.json) at depth 1.
      "dinov2_s14": _dinov2(tmp_path_factory, "d14", 3, hidden_size=384, num_hidden_layers=1,
                            num_attention_heads=6, patch_size=14, image_size=518),
      "clip_small": _clip(tmp_path_factory, "c", 4, **SMALL_CLIP),
      "clip_whole": _clip(tmp_path_factory, "cw", 5, whole=True, **SMALL_CLIP),
      # openai/clip-vit-base-patch16 and -large-patch14 vision shapes at depth 1.
      "clip_b16": _clip(tmp_path_factory, "cb", 6, hidden_size=768, intermediate_size=3072,
                        num_hidden_layers=1, num_attention_heads=12, patch_size=16,
                        image_size=224),
      "clip_l14": _clip(tmp_path_factory, "cl", 7, hidden_size=1024, intermediate_size=4096,
                        num_hidden_layers=1, num_attention_heads=16, patch_size=14,
                        image_size=224),
  }
  return out


def _reference(model, pixels_nhwc: np.ndarray, **kw):
  """`transformers` (last_hidden_state, pooler_output) of NHWC normalised pixels."""
  torch, _ = _torch()
  with torch.no_grad():
    out = model(pixel_values=torch.from_numpy(pixels_nhwc.transpose(0, 3, 1, 2).copy()), **kw)
  return out.last_hidden_state.numpy(), out.pooler_output.numpy()


# (case, input side): the trained grid (CLIP), or another one (position-table interpolation;
# DINOv2-S/14 at FQGAN's 224: its 37 x 37 table -> 16 x 16).
TOWER_CASES = [("dinov2_small", 42), ("dinov2_swiglu", 35), ("dinov2_s14", 224),
               ("clip_small", 35), ("clip_whole", 28), ("clip_b16", 224), ("clip_l14", 224)]


@pytest.mark.parametrize("case,side", TOWER_CASES, ids=[f"{c}-{s}" for c, s in TOWER_CASES])
def test_tower_matches_transformers(models, case, side):
  model, path = models[case]
  kind = case.split("_")[0]
  tower = vit.from_pretrained(kind, path)
  assert tower.config == vit.config_from_hf(kind, json.loads((path / "config.json").read_text()))
  x = np.random.default_rng(side).normal(size=(2, side, side, 3)).astype(np.float32)
  kw = {"interpolate_pos_encoding": True} if kind == "clip" and side != 28 and side != 224 else {}
  want_hidden, want_pooled = _reference(model, x, **kw)
  hidden, pooled = _apply(tower, jnp.asarray(x))
  grid = side // tower.config.patch_size
  assert hidden.shape == (2, 1 + grid * grid, tower.config.width) == want_hidden.shape
  np.testing.assert_allclose(np.asarray(hidden), want_hidden, **TOL)
  np.testing.assert_allclose(np.asarray(pooled), want_pooled, **TOL)


def _fqgan_scaling(kind: str, images: np.ndarray, size: int) -> np.ndarray:
  """FQGAN's official `ScalingLayer` on [0, 1] NHWC images, in torch: legacy nearest resize,
  then the tower's mean / std -> NHWC."""
  torch, _ = _torch()
  mean, std = (torch.tensor(v)[None, :, None, None] for v in teachers.NORMALISATION[kind])
  u = torch.nn.functional.interpolate(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                                      (size, size))
  return ((u - mean) / std).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("case", ["dinov2_s14", "clip_whole"])
def test_teacher_features_match_fqgan_towers(models, case):
  """`build_teacher("<kind>:<dir>")` = FQGAN's towers: CLS = token 0 of the last hidden state
  (CLIP: before post_layernorm; `cls_feature="pooled"` = pooler_output), patches = tokens 1:."""
  model, path = models[case]
  kind = case.split("_")[0]
  name = f"{kind}:{path}"
  t = teachers.build_teacher(name)
  assert t.width == teachers.teacher_width(name) == model.config.hidden_size
  size = 224 if kind == "dinov2" else model.config.image_size
  assert t.size == size
  images = np.random.default_rng(0).uniform(size=(3, 45, 37, 3)).astype(np.float32)
  want_hidden, want_pooled = _reference(model, _fqgan_scaling(kind, images, size))
  out = _apply(t, jnp.asarray(images))
  np.testing.assert_allclose(np.asarray(out.cls), want_hidden[:, 0], **TOL)
  np.testing.assert_allclose(np.asarray(out.patches), want_hidden[:, 1:], **TOL)
  if kind == "dinov2":  # (Its pooler_output is the same token.)
    return
  pooled = _apply(teachers.ViTTeacher(path, cls_feature="pooled"), jnp.asarray(images)).cls
  np.testing.assert_allclose(np.asarray(pooled), want_pooled, **TOL)
  assert np.abs(want_pooled - want_hidden[:, 0]).max() > 1e-2  # CLIP: the two CLS differ.
  g = _input_grad(t, jnp.asarray(images))
  assert not np.any(np.asarray(g))  # Frozen: no gradient reaches the images.


def test_bicubic_resize_matches_torch():
  torch, _ = _torch()
  x = np.random.default_rng(1).uniform(size=(2, 37, 23, 3)).astype(np.float32)
  for out_h, out_w in ((16, 16), (50, 9), (37, 23)):
    want = torch.nn.functional.interpolate(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()),
                                           (out_h, out_w), mode="bicubic", align_corners=False)
    got = vit.resize_grid(jnp.asarray(x), out_h, out_w)
    np.testing.assert_allclose(np.asarray(got), want.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-5)


def test_transformers5_state_dict_names_load(models, tmp_path):
  """The renamed in-memory names (`attention.q_proj`, `mlp.gate_proj`/`up_proj`, ...) load
  to the same tower as the Hub names `save_pretrained` writes."""
  model, path = models["dinov2_swiglu"]
  sd = {k: v.numpy() for k, v in model.state_dict().items()}
  assert any(".attention.q_proj." in k for k in sd) and any(".gate_proj." in k for k in sd)
  shutil.copy(path / "config.json", tmp_path / "config.json")
  write_safetensors(tmp_path / "model.safetensors", sd)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(2, 35, 35, 3)), jnp.float32)
  a, _ = _apply(vit.from_pretrained("dinov2", tmp_path), x)
  b, _ = _apply(vit.from_pretrained("dinov2", path), x)
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_released_names_from_the_local_hf_cache(models, tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
  with pytest.raises(ValueError, match="not in the local Hugging Face cache.*'dinov2:<dir>'"):
    teachers.build_teacher("facebook/dinov2-small")
  assert teachers.teacher_width("facebook/dinov2-small") == 384
  _, path = models["dinov2_small"]
  repo = tmp_path / "hub" / "models--facebook--dinov2-small"
  shutil.copytree(path, repo / "snapshots" / "abc123")
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text("abc123")
  assert teachers.hf_cache_dir("facebook/dinov2-small") == repo / "snapshots" / "abc123"
  t = teachers.build_teacher("facebook/dinov2-small")
  assert isinstance(t, teachers.ViTTeacher) and t.kind == "dinov2" and t.width == 64


def test_bad_inputs_and_files(models, tmp_path):
  _, dpath = models["dinov2_small"]
  _, cpath = models["clip_small"]
  t = teachers.build_teacher(f"dinov2:{dpath}")
  with pytest.raises(ValueError, match=r"images: expected \[B, H, W, 3\].*\(2, 28, 28\)"):
    t(jnp.zeros((2, 28, 28)))
  with pytest.raises(ValueError, match=r"pixels: expected \[B, H, W, 3\]"):
    t.tower(jnp.zeros((1, 5, 5, 3)))  # Smaller than one patch.
  u8 = np.random.default_rng(5).integers(0, 256, (1, 30, 30, 3), dtype=np.uint8)
  x = t.preprocess(jnp.asarray(u8))
  assert x.shape == (1, 224, 224, 3)
  np.testing.assert_allclose(np.asarray(x), np.asarray(t.preprocess(jnp.asarray(u8 / 255.0))),
                             rtol=1e-6, atol=1e-6)
  # A missing tensor: named.
  tensors = read_safetensors(dpath / "model.safetensors")
  del tensors["encoder.layer.1.attention.attention.key.weight"]
  shutil.copy(dpath / "config.json", tmp_path / "config.json")
  write_safetensors(tmp_path / "model.safetensors", tensors)
  with pytest.raises(ValueError, match="no dinov2 tensor 'encoder.layer.1.attention.attention"
                                       ".key.weight'"):
    teachers.ViTTeacher(tmp_path)
  # A tensor of the wrong shape: named, with both shapes.
  tensors = read_safetensors(dpath / "model.safetensors")
  tensors["layernorm.weight"] = np.ones((65,), np.float32)
  write_safetensors(tmp_path / "model.safetensors", tensors)
  with pytest.raises(ValueError, match=r"'layernorm.weight' has shape \(65,\).*\(64,\)"):
    vit.from_pretrained("dinov2", tmp_path)
  # A config.json with fewer blocks than the weights.
  config = json.loads((dpath / "config.json").read_text())
  (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 1}))
  shutil.copy(dpath / "model.safetensors", tmp_path / "model.safetensors")
  with pytest.raises(ValueError, match="tensors that the 1-block config does not use.*"
                                       "encoder.layer.1"):
    vit.from_pretrained("dinov2", tmp_path)
  # The wrong kind, no weights file, no config, bad names and arguments.
  with pytest.raises(ValueError, match="expected a clip config.*'dinov2'"):
    teachers.build_teacher(f"clip:{dpath}")
  with pytest.raises(ValueError, match="expected a dinov2 config.*'clip_vision_model'"):
    teachers.teacher_width(f"dinov2:{cpath}")
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(ValueError, match="path: expected model.safetensors"):
    teachers.ViTTeacher(tmp_path)
  with pytest.raises(ValueError, match="path: expected a Hugging Face model directory holding "
                                       "config.json"):
    teachers.teacher_width(f"clip:{tmp_path / 'nowhere'}")
  with pytest.raises(ValueError, match="name: expected 'dinov2:<directory"):
    teachers.build_teacher("dinov2:")
  with pytest.raises(ValueError, match="resize: expected one of"):
    teachers.ViTTeacher(dpath, resize="area")
  with pytest.raises(ValueError, match="cls_feature: expected one of"):
    teachers.ViTTeacher(dpath, cls_feature="mean")
  with pytest.raises(ValueError, match="size: expected an int >= the patch size 7"):
    teachers.ViTTeacher(dpath, size=3)
  with pytest.raises(ValueError, match="path: expected a Hugging Face model directory, or "
                                       "config="):
    teachers.ViTTeacher()
  cfg = vit.ViTTowerConfig(kind="clip", width=32, depth=1, heads=2, mlp_dim=64, patch_size=8,
                           image_size=32, layer_norm_eps=1e-5, act="quick_gelu")
  with pytest.raises(ValueError, match="kind: 'dinov2' disagrees with config.kind 'clip'"):
    teachers.ViTTeacher(config=cfg, kind="dinov2", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="rngs: expected nnx.Rngs"):
    teachers.ViTTeacher(config=cfg)
  # Random weights, 32 x 32 input (traced abstractly: only shapes are checked).
  out = jax.eval_shape(lambda x: teachers.ViTTeacher(config=cfg, rngs=nnx.Rngs(0))(x),
                       jax.ShapeDtypeStruct((2, 50, 40, 3), jnp.float32))
  assert out.cls.shape == (2, 32) and out.patches.shape == (2, 16, 32)
  with pytest.raises(ValueError, match="heads: expected a divisor of width 64"):
    vit.ViTTowerConfig(kind="clip", width=64, depth=1, heads=5, mlp_dim=8, patch_size=4,
                       image_size=8, layer_norm_eps=1e-5, act="quick_gelu")
  with pytest.raises(ValueError, match="act: expected one of"):
    vit.config_from_hf("clip", {"hidden_act": "swish"})


def test_bicubic_teacher_resize(models):
  """resize="bicubic" = torch's bicubic resize then the same tower."""
  torch, _ = _torch()
  model, path = models["dinov2_small"]
  t = teachers.ViTTeacher(path, resize="bicubic", size=35)
  images = np.random.default_rng(3).uniform(size=(2, 50, 50, 3)).astype(np.float32)
  mean, std = (torch.tensor(v)[None, :, None, None] for v in teachers.NORMALISATION["dinov2"])
  u = torch.nn.functional.interpolate(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                                      (35, 35), mode="bicubic", align_corners=False)
  want, _ = _reference(model, ((u - mean) / std).numpy().transpose(0, 2, 3, 1))
  out = _apply(t, jnp.asarray(images))
  np.testing.assert_allclose(np.asarray(out.cls), want[:, 0], **TOL)
  np.testing.assert_allclose(np.asarray(out.patches), want[:, 1:], **TOL)


def test_fqgan_semantic_loss_config_builds_a_clip_teacher(models, tmp_path_factory):
  """`loss.semantic_teacher="sem=clip:<dir>"` reaches the trainer's frozen networks: width
  checked against the feature head, the merged network = the teacher."""
  f = fqgan_configs.get_config("smoke")
  width = f.model.feature_heads["sem"][0]
  _, small = models["clip_small"]
  f.loss.semantic_teacher = f"sem=clip:{small}"
  with pytest.raises(ValueError, match=f"64-wide.*{width}"):
    frozen_lib.semantic_networks(f, f.model)
  model, path = _clip(tmp_path_factory, "c288", 8, **{**SMALL_CLIP, "hidden_size": width,
                                                       "num_hidden_layers": 1})
  f.loss.semantic_teacher = f"sem=clip:{path}"
  graphdef, params, state = frozen_lib.semantic_networks(f, f.model)["sem"]
  images = np.random.default_rng(4).uniform(size=(2, 32, 32, 3)).astype(np.float32)
  got = jax.jit(frozen_lib.frozen_apply(graphdef))((params, state), jnp.asarray(images))
  want, _ = _reference(model, _fqgan_scaling("clip", images, 28))
  assert got.cls.shape == (2, width) and got.patches.shape == (2, 16, width)
  np.testing.assert_allclose(np.asarray(got.cls), want[:, 0], **TOL)
