"""`jaxtok.load("hf:...")` on Hugging Face cache snapshots built from the shared fixtures.

Each fixture's official parameters are written in the layout of a released repo (TiTok's
PyTorchModelHubMixin `config.json` + `model.safetensors`, the legacy `fun-research/TiTok`
`.bin`, One-D-Piece's `pytorch_model.bin`, FlexTok's `model.safetensors` with its config only
in the `__metadata__`, FQGAN's `.pt`) into an HF hub cache (`models--ORG--NAME/refs/main`,
`blobs/`, `snapshots/SHA/FILE` -> blob links, as huggingface_hub writes it) under
`HF_HUB_CACHE`, and loaded by name with `HF_HUB_OFFLINE=1`: the model must give the fixture's
official outputs at the converter tests' tolerances, and a second load must read the converted
checkpoint from `JAXTOK_CACHE` without calling the converter. The errors are checked against
the same cache and, for the hub's own answers (unknown repo, revision, file), against a local
stand-in of the hub's HTTP API (`HF_ENDPOINT`).
"""
import collections
import hashlib
import http.server
import json
import pathlib
import socket
import threading

import jax
import numpy as np
import pytest
from flax import nnx

import jaxtok
from jaxtok import hub
from jaxtok.hub import formats, releases
from jaxtok.io import checkpoint
from jaxtok.tokenizers.titok.official import official_titok_config
from tests.fixture_files import FIXTURES, fixture_params
from tests.hub_cache import (
  fqgan_pt_file,
  json_file,
  load_npz,
  official_params,
  put_snapshot,
  safetensors_file,
  titok_release,
  torch_bin_file,
)
from tests.tokenizers.flextok.release import (
  check_against_fixture,
  read_fixture,
  release_config,
  release_with_vae,
)

TITOK_RECON_ATOL = 3e-4  # tests/fixtures/titok/README.md §5 (test_convert.py)
FLEXTOK_ATOL = 1e-4  # tests/fixtures/flextok/README.md §6 (test_flextok_convert.py)


@pytest.fixture
def env(tmp_path, monkeypatch):
  """An empty HF cache and jaxtok cache, offline."""
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
  monkeypatch.setenv("JAXTOK_CACHE", str(tmp_path / "jaxtok"))
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.delenv("HF_ENDPOINT", raising=False)
  (tmp_path / "hf").mkdir()
  return tmp_path / "hf"


@pytest.fixture
def calls(monkeypatch):
  """Counts the converter calls `jaxtok.hub` makes."""
  count = collections.Counter()
  real = hub.convert_official

  def counting(family, *args, **kwargs):
    count[family] += 1
    return real(family, *args, **kwargs)

  monkeypatch.setattr(hub, "convert_official", counting)
  return count


def _nhwc(a):
  return np.ascontiguousarray(np.asarray(a).transpose(0, 2, 3, 1))


def _same_weights(a, b):
  wa, _ = checkpoint.state_to_arrays(a)
  wb, _ = checkpoint.state_to_arrays(b)
  assert wa.keys() == wb.keys()
  for k in wa:
    np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


# ---------------------------------------------------------------- TiTok / One-D-Piece


@pytest.mark.parametrize("path", fixture_params(("titok", "one_d_piece"), FIXTURES / "titok"))
def test_titok_releases_reproduce_the_fixture_then_load_from_the_cache(path, env, calls):
  fx = load_npz(path)
  name, files, options = titok_release(fx)
  ref = hub.parse(name)
  put_snapshot(env, ref.repo, files)
  tok = jaxtok.load(name, **options)
  kind = str(fx["fixture_kind"])
  assert tok.family == ("one_d_piece" if kind == "one_d_piece" else "titok")
  assert sum(calls.values()) == 1
  tokens = tok.encode(_nhwc(fx["x"]))
  np.testing.assert_array_equal(tokens, fx["tokens"][:, 0, :])  # The official tokens.
  np.testing.assert_allclose(tok.decode(tokens), np.clip(_nhwc(fx["recon_from_ids"]), 0, 1),
                             atol=TITOK_RECON_ATOL)
  if kind == "one_d_piece":
    n = int(fx["prefix_lengths"][0])
    np.testing.assert_allclose(tok.decode(tokens[:, :n]),
                               np.clip(_nhwc(fx[f"recon_len{n}"]), 0, 1), atol=TITOK_RECON_ATOL)
  # Second load: the converted checkpoint, no converter call, the same weights.
  again = jaxtok.load(name, **options)
  assert sum(calls.values()) == 1
  _same_weights(tok.model, again.model)
  meta = json.loads((hub.converted_dir(ref, _sha(env, ref.repo), options)
                     / "config.json").read_text())
  assert meta["family"] == tok.family


def _sha(cache, repo):
  return (cache / ("models--" + repo.replace("/", "--")) / "refs" / "main").read_text()


def test_registered_titok_configs_are_the_official_sizes():
  """Every registered TiTok / One-D-Piece config reads into the paper's model."""
  want = {"large": 1024, "base": 768, "small": 512}
  for rel in releases.RELEASES.values():
    if rel.family not in ("titok", "one_d_piece"):
      continue
    vq = rel.official_config["model"]["vq_model"]
    cfg = official_titok_config(rel.official_config)
    assert (cfg.enc_width, cfg.dec_width) == (want[vq["vit_enc_model_size"]],
                                              want[vq["vit_dec_model_size"]]), rel.id
    assert cfg.num_latent_tokens == int(rel.tokens.split(" ")[0].split("-")[-1]), rel.id
    assert cfg.tail_token_drop == (rel.family == "one_d_piece"), rel.id
    assert cfg.quantizer == ("gaussian" if "VAE" in rel.name else "vq"), rel.id
  l32 = official_titok_config(releases.RELEASES["yucornetto/tokenizer_titok_l32_imagenet"]
                              .official_config)
  assert (l32.codebook_size, l32.token_size, l32.head, l32.use_l2_norm) == (4096, 12,
                                                                            "two_stage", True)
  sl256 = official_titok_config(releases.RELEASES["yucornetto/tokenizer_titok_sl256_vq8k_imagenet"]
                                .official_config)
  assert (sl256.codebook_size, sl256.token_size, sl256.head, sl256.enc_depth,
          sl256.dec_depth) == (8192, 64, "pixel", 8, 24)


# ---------------------------------------------------------------- FlexTok


@pytest.mark.parametrize("path", fixture_params("flextok", FIXTURES / "flextok"))
def test_flextok_metadata_release_reproduces_the_fixture(path, env, calls):
  data, cfg, params = read_fixture(path)
  rel = release_config(cfg)
  # The official saver: the Hydra config only in the safetensors __metadata__, str() per key.
  put_snapshot(env, "EPFL-VILAB/flextok_d18_d28_dfn", {"model.safetensors": safetensors_file(
      params, metadata={k: str(v) for k, v in rel.items()})})
  tok = jaxtok.load("hf:EPFL-VILAB/flextok_d18_d28_dfn", family="flextok")
  assert calls == {"flextok": 1}
  check_against_fixture(tok, data, FLEXTOK_ATOL)
  again = jaxtok.load("hf:EPFL-VILAB/flextok_d18_d28_dfn")
  assert calls == {"flextok": 1}
  _same_weights(tok.model, again.model)


# ---------------------------------------------------------------- FQGAN


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
@pytest.mark.parametrize("path", fixture_params("fqgan", FIXTURES / "fqgan"))
def test_fqgan_file_reproduces_the_fixture(path, env, calls):
  fx = load_npz(path)
  cfg = json.loads(str(fx["config_json"]))
  put_snapshot(env, "ZechenBai/FQGAN", {"fqgan_dual_ds16.pt": fqgan_pt_file(fx),
                                        "README.md": b"# FQGAN\n"})
  name = "hf:ZechenBai/FQGAN/fqgan_dual_ds16.pt"
  # The tiny fixture is not the released dual-16: its official description replaces the
  # variant the registry reads from the file name.
  tok = jaxtok.load(name, config=cfg)
  assert tok.family == "fqgan" and calls == {"fqgan": 1}
  x = np.transpose(fx["x"], (0, 2, 3, 1)) * 0.5 + 0.5  # official [-1, 1] -> [0, 1]
  ids = tok.encode(x)
  want = np.stack([fx[f"indices_{b}"].reshape(x.shape[0], -1) for b in cfg["concat_order"]],
                  axis=-1)
  np.testing.assert_array_equal(ids, want)
  want_img = np.clip(np.transpose(fx["recon_from_indices"], (0, 2, 3, 1)) * 0.5 + 0.5, 0, 1)
  np.testing.assert_allclose(tok.decode(ids), want_img,
                             atol=1e-4 * 0.5 * np.abs(fx["recon_from_indices"]).max() + 1e-5)
  again = jaxtok.load(name, config=cfg)
  assert calls == {"fqgan": 1}
  _same_weights(tok.model, again.model)
  # Without config=, the registry's variant (dual-16, the released size) is used: the tiny
  # weights do not fit it, and the converter says so.
  with pytest.raises(ValueError, match="params"):
    jaxtok.load(name)
  with pytest.raises(hub.HubError, match="several checkpoints.*fqgan_dual_ds16.pt"):
    jaxtok.load("hf:ZechenBai/FQGAN")


# ---------------------------------------------------------------- jaxtok's own format


def test_jaxtok_checkpoint_on_the_hub_loads_as_it_is(env, calls, tmp_path):
  tok = jaxtok.load("titok:smoke", seed=3)
  saved = jaxtok.save(tok, tmp_path / "saved")
  sha = put_snapshot(env, "someone/my-titok", {
      "config.json": (saved / "config.json").read_bytes(),
      "weights.safetensors": (saved / "weights.safetensors").read_bytes(),
      "README.md": b"a jaxtok checkpoint\n"})
  got = jaxtok.load("hf:someone/my-titok")
  assert got.family == "titok" and not calls
  _same_weights(tok.model, got.model)
  got = jaxtok.load(f"hf:someone/my-titok@{sha}", family="titok")  # A commit, offline.
  _same_weights(tok.model, got.model)
  with pytest.raises(hub.HubError, match="holds a titok .*not flextok"):
    jaxtok.load("hf:someone/my-titok", family="flextok")
  with pytest.raises(hub.HubError, match=r"loads as it is; got converter options \['heads'\]"):
    jaxtok.load("hf:someone/my-titok", heads=4)


# ---------------------------------------------------------------- errors


def test_parse():
  assert hub.parse("hf:a/b") == hub.HubRef("a/b")
  assert hub.parse("hf:a/b@v1.0/sub/f.pt") == hub.HubRef("a/b", "v1.0", "sub/f.pt")
  assert str(hub.parse("hf:a/b@v1/f.pt")) == "hf:a/b@v1/f.pt"
  for bad in ("hf:a", "hf:a/b@", "hf:a/../x", "hf:/b", "hf:a/b/../c", "hf:a b/c"):
    with pytest.raises(hub.HubError, match="path_or_variant"):
      hub.parse(bad)


def test_offline_errors_name_what_is_missing(env, tmp_path):
  with pytest.raises(hub.HubError, match="not in the HF cache.*HF_HUB_OFFLINE is set"):
    jaxtok.load("hf:nobody/nothing")
  put_snapshot(env, "ZechenBai/FQGAN", {"README.md": b"x"})
  with pytest.raises(hub.HubError, match=r"no file 'fqgan_triple_ds8.pt' in the HF cache"):
    jaxtok.load("hf:ZechenBai/FQGAN/fqgan_triple_ds8.pt")
  put_snapshot(env, "someone/odd", {"weights.npz": b"x", "README.md": b"x"})
  with pytest.raises(hub.HubError, match="no file of a known format.*family="):
    jaxtok.load("hf:someone/odd")
  with pytest.raises(hub.HubError, match="'weights.npz' is not a file of a known format"):
    jaxtok.load("hf:someone/odd/weights.npz")
  put_snapshot(env, "someone/titok-no-config", {"model.safetensors": safetensors_file(
      {"w": np.zeros(2, np.float32)})})
  with pytest.raises(hub.HubError, match="config: .*config="):
    jaxtok.load("hf:someone/titok-no-config/model.safetensors", family="titok")
  with pytest.raises(ValueError, match="family: expected one of"):
    jaxtok.load("hf:someone/odd", family="nope")
  with pytest.raises(ValueError, match="only 'hf:' names"):
    jaxtok.load("titok:smoke", family="titok")


def test_another_family_than_asked(env):
  fx = load_npz(FIXTURES / "titok" / "titok_single_tiny.npz")
  name, files, options = titok_release(fx)
  put_snapshot(env, hub.parse(name).repo, files)
  with pytest.raises(hub.HubError, match="holds a titok release.*not flextok"):
    jaxtok.load(name, family="flextok", **options)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _go_online(monkeypatch):
  """Not offline, also for a huggingface_hub imported while HF_HUB_OFFLINE was set (it reads
  the variable once, at import)."""
  from huggingface_hub import constants  # noqa: PLC0415
  monkeypatch.delenv("HF_HUB_OFFLINE")
  monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_no_network_names_hf_hub_offline(env, monkeypatch):
  _go_online(monkeypatch)
  monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_free_port()}")  # Nothing listens.
  with pytest.raises(hub.HubError, match="could not be reached.*HF_HUB_OFFLINE=1"):
    jaxtok.load("hf:yucornetto/tokenizer_titok_l32_imagenet")


class _Hub(http.server.BaseHTTPRequestHandler):
  """The hub's model-info API for one repo, `someone/my-titok` at commit SHA."""
  SHA = "a" * 40
  FILES = ("config.json", "weights.safetensors")

  CONTENT: dict = {}  # file -> bytes served under /ORG/NAME/resolve/REV/FILE.

  def do_HEAD(self):
    self._file(body=False)

  def _file(self, body=True):
    parts = self.path.split("?")[0].strip("/").split("/")  # ORG/NAME/resolve/REV/FILE
    data = self.CONTENT.get("/".join(parts[4:]))
    if parts[:3] != ["someone", "my-titok", "resolve"] or data is None:
      return self._error(404, "EntryNotFound", "Entry not found")
    self.send_response(200)
    self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
    self.send_header("X-Repo-Commit", self.SHA)
    self.send_header("Content-Length", str(len(data)))
    self.end_headers()
    if body:
      self.wfile.write(data)

  def do_GET(self):
    if "/resolve/" in self.path:
      return self._file()
    parts = self.path.split("?")[0].strip("/").split("/")  # api/models/ORG/NAME[/revision/R]
    repo = "/".join(parts[2:4])
    if parts[:2] != ["api", "models"] or repo != "someone/my-titok":
      return self._error(404, "RepoNotFound", "Repository not found")
    if len(parts) > 5 and parts[5] not in ("main", self.SHA):
      return self._error(404, "RevisionNotFound", f"Invalid rev id: {parts[5]}")
    body = json.dumps({"id": repo, "modelId": repo, "sha": self.SHA,
                       "siblings": [{"rfilename": f} for f in self.FILES]}).encode()
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _error(self, status, code, message):
    body = json.dumps({"error": message}).encode()
    self.send_response(status)
    self.send_header("X-Error-Code", code)
    self.send_header("X-Error-Message", message)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def log_message(self, *args):
    pass


@pytest.fixture
def online(env, monkeypatch):
  """A local stand-in of the hub's API as HF_ENDPOINT, not offline."""
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  _go_online(monkeypatch)
  monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
  yield env
  server.shutdown()
  server.server_close()


def test_hub_answers_unknown_repo_revision_and_file(online, tmp_path):
  with pytest.raises(hub.HubError, match="no such model repo.*check ORG/NAME"):
    jaxtok.load("hf:nobody/nothing")
  with pytest.raises(hub.HubError, match="no revision 'nope'"):
    jaxtok.load("hf:someone/my-titok@nope")
  with pytest.raises(hub.HubError, match=r"no file 'other.pt' at revision aaaaaaaaaaaa.*"
                                         r"config.json, weights.safetensors"):
    jaxtok.load("hf:someone/my-titok/other.pt")


def test_download_then_offline(online, tmp_path, monkeypatch):
  """Online: the files are downloaded into the HF cache; then offline they load from it."""
  tok = jaxtok.load("titok:smoke")
  saved = jaxtok.save(tok, tmp_path / "saved")
  monkeypatch.setattr(_Hub, "CONTENT", {f: (saved / f).read_bytes() for f in _Hub.FILES})
  _same_weights(tok.model, jaxtok.load("hf:someone/my-titok").model)
  snap = online / "models--someone--my-titok" / "snapshots" / _Hub.SHA
  assert sorted(p.name for p in snap.iterdir()) == sorted(_Hub.FILES)
  monkeypatch.setattr(_Hub, "CONTENT", {})
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  _same_weights(tok.model, jaxtok.load("hf:someone/my-titok").model)


# ---------------------------------------------------------------- FlexTok's VAE scaling factor


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_flextok_vae_scaling_factor_from_the_vae_repo_or_the_argument(env, calls):
  path = fixture_params("flextok", FIXTURES / "flextok")[0].values[0]
  data, cfg, params = read_fixture(path)
  rel, full, _ = release_with_vae(cfg, params, hf_hub_path="EPFL-VILAB/flextok_vae_c16",
                                  scaling_factor=None)  # Skips without torch / diffusers.
  put_snapshot(env, "EPFL-VILAB/flextok_d12_d12_in1k", {
      "config.json": json_file(rel), "model.safetensors": safetensors_file(full)})
  name = "hf:EPFL-VILAB/flextok_d12_d12_in1k"
  # No file of the release holds the factor; the VAE repo is not in the cache.
  with pytest.raises(hub.HubError, match="vae_scaling_factor: .*hf_hub_path='EPFL-VILAB/"
                                         "flextok_vae_c16'.*pass vae_scaling_factor="):
    jaxtok.load(name)
  assert not calls
  tok = jaxtok.load(name, vae_scaling_factor=0.5)
  assert tok.model.config.vae.scaling_factor == 0.5
  # The VAE repo's config.json in the cache: read from there, as the official code does.
  put_snapshot(env, "EPFL-VILAB/flextok_vae_c16", {"config.json": json_file(
      {"_class_name": "AutoencoderKL", "scaling_factor": 0.7})})
  tok = jaxtok.load(name)
  assert tok.model.config.vae.scaling_factor == 0.7
  assert calls == {"flextok": 2}


def test_formats_are_documented():
  assert set(formats.FORMATS) == {"jaxtok", *formats.CONVERTER}
  for rel in releases.RELEASES.values():
    assert rel.format in formats.FORMATS and rel.family in formats.FAMILIES[rel.format]


def test_diffusers_vae_repo(env, calls, tmp_path):
  torch = pytest.importorskip("torch")
  diffusers = pytest.importorskip("diffusers")
  from jaxtok.tokenizers.convert import load_official  # noqa: PLC0415
  torch.manual_seed(0)
  vae = diffusers.AutoencoderKL(
      down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
      block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32,
      sample_size=32)
  vae.save_pretrained(tmp_path / "vae")
  put_snapshot(env, "EPFL-VILAB/flextok_vae_c4", {
      f: (tmp_path / "vae" / f).read_bytes()
      for f in ("config.json", formats.DIFFUSERS_WEIGHTS)})
  tok = jaxtok.load("hf:EPFL-VILAB/flextok_vae_c4", family="vae")
  assert tok.family == "vae" and tok.continuous and calls == {"vae": 1}
  _same_weights(tok.model, load_official("vae", tmp_path / "vae"))
  jaxtok.load("hf:EPFL-VILAB/flextok_vae_c4")
  assert calls == {"vae": 1}
  with pytest.raises(hub.HubError, match="holds a vae (release|model).*not titok"):
    jaxtok.load("hf:EPFL-VILAB/flextok_vae_c4", family="titok")


def test_bfloat16_inference(env):
  """dtype="bfloat16": bf16 weights, bf16 compute (TiTok), the official tokens nearly all
  kept and the decode close to the official one."""
  fx = load_npz(FIXTURES / "titok" / "titok_single_tiny.npz")
  name, files, options = titok_release(fx)
  put_snapshot(env, hub.parse(name).repo, files)
  tok = jaxtok.load(name, dtype="bfloat16", **options)
  dtypes = {str(a.dtype) for a in jax.tree.leaves(nnx.state(tok.model, nnx.Param))}
  assert dtypes == {"bfloat16"}
  tokens = tok.encode(_nhwc(fx["x"]))
  assert tokens.dtype == np.int32
  assert np.mean(tokens == fx["tokens"][:, 0, :]) >= 0.9
  recon = tok.decode(fx["tokens"][:, 0, :])
  assert recon.dtype == np.float32
  want = np.clip(_nhwc(fx["recon_from_ids"]), 0, 1)
  err = np.abs(recon - want).mean()
  assert 0 < err < 0.03, err  # Not float32's 1e-4, but the same images.
  with pytest.raises(ValueError, match="dtype: expected"):
    jaxtok.load(name, dtype="float16", **options)


def test_legacy_file_with_the_maskgit_vqgan_from_the_hub(env, calls):
  """A legacy .bin without the pixel decoder takes it from the MaskGIT VQGAN file named by a
  `hf:` option (fun-research/TiTok holds both)."""
  fx = load_npz(FIXTURES / "titok" / "titok_legacy_tiny.npz")
  name, files, options = titok_release(fx)
  params = official_params(fx)
  pixel = ("pixel_decoder.", "pixel_quantize.")
  titok_only = {k: v for k, v in params.items() if not k.startswith(pixel)}
  maskgit = {"decoder." + k[len("pixel_decoder."):]: v for k, v in params.items()
             if k.startswith("pixel_decoder.")}
  maskgit["quantize.embedding.weight"] = params["pixel_quantize.embedding.weight"]
  put_snapshot(env, "fun-research/TiTok", {
      "tokenizer_titok_l32.bin": torch_bin_file(titok_only),
      "maskgit-vqgan-imagenet-f16-256.bin": torch_bin_file(maskgit)})
  with pytest.raises(ValueError, match="maskgit"):
    jaxtok.load(name, **options)
  tok = jaxtok.load(name, maskgit_vqgan="hf:fun-research/TiTok/maskgit-vqgan-imagenet-f16-256.bin",
                    **options)
  tokens = tok.encode(_nhwc(fx["x"]))
  np.testing.assert_array_equal(tokens, fx["tokens"][:, 0, :])
  np.testing.assert_allclose(tok.decode(tokens), np.clip(_nhwc(fx["recon_from_ids"]), 0, 1),
                             atol=TITOK_RECON_ATOL)
  with pytest.raises(hub.HubError, match="maskgit_vqgan: expected 'hf:ORG/NAME"):
    jaxtok.load(name, maskgit_vqgan="hf:fun-research/TiTok", **options)


def test_readme_holds_the_zoo_table():
  readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
  assert hub.zoo_markdown() in readme
  assert 'jaxtok.load("hf:yucornetto/tokenizer_titok_l32_imagenet")' in readme
