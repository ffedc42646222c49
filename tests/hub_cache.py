"""Hugging Face hub cache snapshots built from the shared fixtures (tests only).

`put_snapshot` lays files out as huggingface_hub caches a repo (`models--ORG--NAME/refs/main`,
`blobs/`, `snapshots/SHA/FILE` -> blob links), so `jaxtok.load("hf:...")` finds them with
`HF_HUB_OFFLINE=1`; the writers and `titok_release` give a fixture the files of a release.
"""
import collections
import hashlib
import importlib.util
import json
import os
import pathlib

import numpy as np

from jaxtok.io import safetensors
from tests.fixture_files import TESTS

_spec = importlib.util.spec_from_file_location("jaxtok_tests_torch_format_hub",
                                               TESTS / "io" / "torch_format.py")
torch_format = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(torch_format)


def put_snapshot(cache: pathlib.Path, repo: str, files: dict, *, ref: str = "main",
                 sha: str | None = None) -> str:
  """Lays `files` ({name: bytes or a writer(path)}) out as huggingface_hub caches a repo."""
  storage = pathlib.Path(cache) / ("models--" + repo.replace("/", "--"))
  sha = sha or hashlib.sha1(f"{repo}@{ref}".encode()).hexdigest()
  snap = storage / "snapshots" / sha
  (storage / "blobs").mkdir(parents=True, exist_ok=True)
  for name, content in files.items():
    tmp = storage / "blobs" / f".incoming-{os.getpid()}"
    if callable(content):
      content(tmp)
    else:
      tmp.write_bytes(content)
    blob = storage / "blobs" / hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, blob)
    link = snap / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
      link.unlink()
    link.symlink_to(os.path.relpath(blob, link.parent))
  (storage / "refs").mkdir(exist_ok=True)
  (storage / "refs" / ref).write_text(sha)
  return sha


def safetensors_file(params, **kw):
  return lambda path: safetensors.write_safetensors(path, params, **kw)


def torch_bin_file(params):
  return lambda path: torch_format.save_state_dict(params, path)


def json_file(obj):
  return json.dumps(obj).encode()


def load_npz(path) -> dict:
  """Every array of a fixture `.npz`."""
  with np.load(path, allow_pickle=False) as f:
    return {k: f[k] for k in f.files}


def fqgan_pt_file(fx):
  """A writer of FQGAN's released `.pt` format (`{"model": state dict, "steps"}`) holding a
  fixture's official parameters."""
  def write(path):
    sd = collections.OrderedDict(
        (k, torch_format.tensor_from_array(np.ascontiguousarray(v), i))
        for i, (k, v) in enumerate(official_params(fx).items()))
    torch_format.save({"model": sd, "steps": 7}, path)
  return write


def official_params(fx) -> dict:
  """The official state dict (`param/<key>`) of a fixture."""
  return {k[len("param/"):]: v for k, v in fx.items() if k.startswith("param/")}


def titok_release(fx, mixin_repo: str = "yucornetto/tokenizer_titok_bl64_vq8k_imagenet"):
  """(hub name, files, options) laying a TiTok fixture out as the release of its kind; a
  PyTorchModelHubMixin fixture goes under `mixin_repo`."""
  cfg = json.loads(str(fx["config_json"]))
  meta = json.loads(str(fx["meta_json"]))
  params = official_params(fx)
  heads = {name: v["heads"] for name, v in meta["size_table"].items()}
  kind = str(fx["fixture_kind"])
  if kind == "one_d_piece":  # One-D-Piece's hub files: config.json + pytorch_model.bin.
    return ("hf:turing-motors/One-D-Piece-S-256",
            {"config.json": json_file(cfg), "pytorch_model.bin": torch_bin_file(params)},
            {"heads": heads})
  if cfg["model"]["vq_model"].get("is_legacy", True):  # A legacy .bin: no config in the repo.
    return ("hf:fun-research/TiTok/tokenizer_titok_l32.bin",
            {"tokenizer_titok_l32.bin": torch_bin_file(params)}, {"heads": heads, "config": cfg})
  return (f"hf:{mixin_repo}",  # PyTorchModelHubMixin.
          {"config.json": json_file(cfg), "model.safetensors": safetensors_file(params)},
          {"heads": heads})
