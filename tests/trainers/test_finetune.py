"""Fine-tuning released weights (`,finetune` recipes): `init_from` reads an official-format
release of each family (laid out from the parity fixtures as it ships: a hub repo, a `.pt`, a
diffusers directory), the run trains that model as it is (`model_from_init`), its first
reconstruction is the converted model's, and one step moves the decoder only. And the GAN
warm-up: the discriminator trains before its loss reaches the generator."""
import json

import jax
import numpy as np
import pytest
from flax import nnx

from jaxtok import data as data_lib
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.train import Experiment, load_init_weights
from tests.fixture_files import FIXTURES, fixture_params
from tests.hub_cache import fqgan_pt_file, load_npz, put_snapshot, titok_release
from tests.tokenizers.flextok.release import read_fixture, release_with_vae
from tests.trainers.common import fixed_batches, get_config, small_config


@pytest.fixture
def hub_env(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
  monkeypatch.setenv("JAXTOK_CACHE", str(tmp_path / "jaxtok"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  (tmp_path / "hf").mkdir()
  return tmp_path / "hf"


def _titok(kind, hub_env):
  """An official TiTok / One-D-Piece hub release of the fixture of `kind`."""
  path = next(p.values[0] for p in fixture_params(kind, FIXTURES / "titok")
              if kind == "one_d_piece" or not json.loads(str(load_npz(p.values[0])["config_json"]))
              ["model"]["vq_model"].get("is_legacy", True))
  name, files, options = titok_release(load_npz(path))
  put_snapshot(hub_env, name[3:], files)
  return name, json.dumps(options)


def _flextok(hub_env, tmp_path):
  """A FlexTok release with its VAE (`model.safetensors` + `config.json`) as a file."""
  from jaxtok.io import safetensors  # noqa: PLC0415
  _, cfg, params = read_fixture(fixture_params("flextok", FIXTURES / "flextok")[0].values[0])
  rel, full, _ = release_with_vae(cfg, params, scaling_factor=0.7)
  d = tmp_path / "flextok_release"
  d.mkdir()
  safetensors.write_safetensors(d / "model.safetensors", full)
  (d / "config.json").write_text(json.dumps(rel))
  return str(d / "model.safetensors"), ""


def _fqgan(hub_env, tmp_path):
  """FQGAN's released `.pt` format; its tiny config given as the converter's `config`."""
  fx = load_npz(fixture_params("fqgan", FIXTURES / "fqgan")[0].values[0])
  path = tmp_path / "fqgan_dual_ds16.pt"
  fqgan_pt_file(fx)(path)
  return str(path), json.dumps({"config": json.loads(str(fx["config_json"]))})


def _vae(hub_env, tmp_path):
  """A diffusers AutoencoderKL directory (`save_pretrained`), as FlexTok's VAEs ship."""
  from tests.tokenizers.flextok.release import diffusers_vae  # noqa: PLC0415
  _, cfg, _ = read_fixture(fixture_params("flextok", FIXTURES / "flextok")[0].values[0])
  ref, _ = diffusers_vae(cfg)  # Skips without torch / diffusers.
  ref.save_pretrained(tmp_path / "vae")
  return str(tmp_path / "vae"), ""


RELEASES = {"titok": lambda e, t: _titok("titok", e), "one_d_piece": lambda e, t: _titok(
    "one_d_piece", e), "flextok": _flextok, "fqgan": _fqgan, "vae": _vae}


@pytest.mark.parametrize("family", [
    pytest.param("titok", marks=pytest.mark.slow),
    pytest.param("one_d_piece", marks=pytest.mark.slow),
    pytest.param("flextok", marks=pytest.mark.slow), pytest.param("fqgan", marks=pytest.mark.slow),
    pytest.param("vae", marks=pytest.mark.slow)])
def test_finetune_starts_from_the_official_release(family, hub_env, tmp_path):
  init_from, options = RELEASES[family](hub_env, tmp_path)
  config = get_config(f"{family}.py:finetune,smoke")
  assert config.model_from_init and config.optim.frozen
  config.init_from, config.init_options = init_from, options
  exp = Experiment(config, jax.devices()[:1])
  released = load_init_weights(init_from, None, family, options)
  assert exp.model_config == released.config  # The released architecture, as it is.
  state = exp.init_from(exp.init_state(), init_from)
  size = exp.data_config.resolution
  images = data_lib.eval_images("bundled", size, max_images=2)
  # The first reconstruction is the converted model's own (two compilations of one function:
  # the step's is built at XLA opt level 0, `fast_compile`; 2e-5 seen, 3e-4 is the parity bar).
  assert all(np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(jax.device_get(state.params)),
      jax.tree_util.tree_leaves(nnx.to_pure_dict(nnx.state(released, nnx.Param)))))
  recon, _ = nnx.jit(lambda m, x: m(x, train=False))(released, images.astype(np.float32) / 255)
  np.testing.assert_allclose(exp.reconstruct(state, images, ema=False),
                             np.clip(np.asarray(recon), 0, 1), atol=1e-4)
  before = jax.device_get(state.params)
  batch = fixed_batches(1, batch=config.batch_size, size=size)[0]
  state, metrics = exp.step(state, exp.global_batch(batch))
  assert np.isfinite(float(metrics["loss/total_loss"]))
  after = jax.device_get(state.params)
  frozen = state_lib.regex_mask(after, config.optim.frozen)
  moved = {state_lib.path_str(p): not np.array_equal(a, b) for (p, a), b, f in zip(
      jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before),
      jax.tree_util.tree_leaves(frozen)) if not f}
  still = [state_lib.path_str(p) for (p, a), b, f in zip(
      jax.tree_util.tree_leaves_with_path(after), jax.tree_util.tree_leaves(before),
      jax.tree_util.tree_leaves(frozen)) if f and not np.array_equal(a, b)]
  assert not still, still  # The encoder and quantizer never move: the tokens keep meaning.
  assert any(moved.values())  # The decoder does.
  assert (state.gan is not None) == (config.loss.gan_weight > 0)


def test_model_from_init_needs_init_from_and_init_options_json():
  config = get_config("titok.py:finetune,smoke")
  with pytest.raises(ValueError, match="model_from_init: expected config.init_from"):
    Experiment(config, jax.devices()[:1])
  with pytest.raises(ValueError, match="init_options: expected a JSON object"):
    load_init_weights("hf:a/b", None, "titok", "[1]")
  with pytest.raises(ValueError, match="init_from: expected a jaxtok checkpoint"):
    load_init_weights("/no/such/file.pt", None, "titok")


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_discriminator_warms_up_before_its_loss_reaches_the_generator():
  config = small_config()
  config.loss.gan_weight, config.loss.gan_start_step = 0.1, 2
  config.loss.disc_warmup_steps, config.loss.lecam_weight = 1, 0.0
  assert config.loss.disc_start_step == 1
  exp = Experiment(config, jax.devices()[:1])
  state = exp.init_state()
  gan0 = jax.device_get(state.gan.params)
  seen = []
  for b in fixed_batches(3):
    state, m = exp.step(state, exp.global_batch(b))
    m = jax.device_get(m)
    seen.append((float(m["loss/weighted_gan_loss"]), float(m["disc/hinge_loss"]),
                 not all(np.array_equal(a, b) for a, b in zip(
                     jax.tree_util.tree_leaves(jax.device_get(state.gan.params)),
                     jax.tree_util.tree_leaves(gan0)))))
  (g0, _, moved0), (g1, _, moved1), (g2, _, _) = seen
  assert not moved0 and g0 == 0.0  # Step 0: neither.
  assert moved1 and g1 == 0.0  # Step 1: the discriminator trains, the generator sees nothing.
  assert g2 != 0.0  # Step 2: the adversarial loss is on.
  with pytest.raises(ValueError, match="disc_warmup_steps: expected an int >= 0"):
    config.loss.disc_warmup_steps = -1
    config.loss.validate()
