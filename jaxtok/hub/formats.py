"""What a hub repo holds, recognised from its files, and how each format is converted.

Formats (`FORMATS`): the official layouts of the released tokenizers plus jaxtok's own
checkpoint directory. A registered release names its format (`jaxtok.hub.releases`); any
other repo is recognised from its file names and its `config.json` (read as data: JSON, and
FlexTok's Hydra strings through the converter's allow-list; nothing is imported or run).
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jaxtok.hub.fetch import HubError, Snapshot, parse, resolve
from jaxtok.hub.releases import Release, files_of
from jaxtok.io import checkpoint as ckpt_format
from jaxtok.io.safetensors import read_safetensors, read_safetensors_metadata
from jaxtok.tokenizers.flextok.official import read_release_config
from jaxtok.tokenizers.titok.official import official_family

FORMATS = {
    "jaxtok": "jaxtok checkpoint directory (config.json with 'family' + weights.safetensors)",
    "titok": "1d-tokenizer PyTorchModelHubMixin (config.json + model.safetensors or "
             "pytorch_model.bin): TiTok, One-D-Piece",
    "titok_file": "a TiTok / One-D-Piece state-dict file (.bin / .safetensors) with its "
                  "official config",
    "flextok": "FlexTok model.safetensors with its Hydra config (config.json or the "
               "safetensors __metadata__)",
    "diffusers": "diffusers AutoencoderKL (config.json + diffusion_pytorch_model.safetensors)",
    "fqgan": "FQGAN .pt ({'model': state_dict})",
}
# The converter of each format's families (`jaxtok.tokenizers.convert.convert_official`).
CONVERTER = {"titok": "titok", "titok_file": "titok", "flextok": "flextok", "diffusers": "vae",
             "fqgan": "fqgan"}
FAMILIES = {"titok": ("titok", "one_d_piece"), "titok_file": ("titok", "one_d_piece"),
            "flextok": ("flextok",), "diffusers": ("vae",), "fqgan": ("fqgan",)}
MIXIN_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
_FQGAN_FILE = re.compile(r"fqgan_(dual|triple)_ds(8|16)(_c2i)?\.pt$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


@dataclasses.dataclass
class Plan:
  """How one release is read.

  Attributes:
    format: a `FORMATS` key.
    family: the family of the model it becomes.
    weights: the repo file holding the weights.
    config: the official config (a dict), or None where the converter reads it from the files.
    options: the converter's options (the release's, then the caller's).
  """
  format: str
  family: str
  weights: str
  config: dict[str, Any] | None = None
  options: dict[str, Any] = dataclasses.field(default_factory=dict)


def _unwrap(cfg: Any) -> Any:
  """A Mixin `config.json` holding `{"config": {...}}` -> the inner dict."""
  if isinstance(cfg, dict) and set(cfg) == {"config"} and isinstance(cfg["config"], dict):
    return cfg["config"]
  return cfg


def _is_titok_config(cfg: Any) -> bool:
  return (isinstance(cfg, dict) and isinstance(cfg.get("model"), dict)
          and isinstance(cfg["model"].get("vq_model"), dict))


def _is_flextok_config(cfg: Any) -> bool:
  return isinstance(cfg, dict) and {"encoder", "decoder", "regularizer"} <= set(cfg)


def _is_jaxtok_meta(cfg: Any) -> bool:
  return isinstance(cfg, dict) and "family" in cfg and isinstance(cfg.get("config"), dict)


def _recognise(snap: Snapshot, family: str | None) -> str:
  """The format of a repo (or of `snap.ref.filename`) that is not in the registry."""
  file = snap.ref.filename
  if file is not None:
    if _FQGAN_FILE.search(file):
      return "fqgan"
    if family is not None:
      return _format_of_family(snap, family)
    if file.endswith(".safetensors") and _flextok_metadata(snap, file):
      return "flextok"
    if (file.endswith(_WEIGHT_SUFFIXES) and snap.has("config.json")
        and _is_titok_config(_unwrap(snap.read_json("config.json")))):
      return "titok_file"
    raise _unknown(snap, f"{file!r} is not a file of a known format")
  if snap.has(ckpt_format.CONFIG_FILE):
    cfg = _unwrap(snap.read_json(ckpt_format.CONFIG_FILE))
    if _is_jaxtok_meta(cfg) and snap.has(ckpt_format.WEIGHTS_FILE):
      return "jaxtok"
    if isinstance(cfg, dict) and cfg.get("_class_name") == "AutoencoderKL":
      return "diffusers"
    if _is_titok_config(cfg) and any(snap.has(w) for w in MIXIN_WEIGHTS):
      return "titok"
    if _is_flextok_config(cfg) and snap.has("model.safetensors"):
      return "flextok"
  elif snap.has("model.safetensors") and _flextok_metadata(snap, "model.safetensors"):
    return "flextok"
  several = files_of(snap.ref.repo) or sorted(f for f in snap.files
                                              if f.endswith(_WEIGHT_SUFFIXES))
  if len(several) > 1:
    raise _unknown(snap, f"the repo holds several checkpoints; name one: "
                         f"{', '.join(f'{snap.ref}/{f}' for f in several[:8])}")
  raise _unknown(snap, "no file of a known format")


def _format_of_family(snap: Snapshot, family: str) -> str:
  fmt = {"titok": "titok_file", "one_d_piece": "titok_file", "flextok": "flextok",
         "fqgan": "fqgan"}.get(family)
  if fmt is None:
    raise _unknown(snap, f"family {family!r} takes a whole repo (diffusers directory), not "
                         f"one file")
  return fmt


def _flextok_metadata(snap: Snapshot, file: str) -> bool:
  try:
    meta = read_safetensors_metadata(snap.path(file))
  except ValueError:
    return False
  return {"encoder", "decoder", "regularizer"} <= set(meta)


def _unknown(snap: Snapshot, what: str) -> HubError:
  shown = sorted(snap.files)[:12]
  return HubError(f"{snap.ref}: {what} (files: {shown}); known formats: "
                  + "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
                  + ". Pass family= (and the converter's options, e.g. config=) to read it")


def plan(snap: Snapshot, release: Release | None, family: str | None,
         options: Mapping[str, Any]) -> Plan:
  """The plan to read `snap` (a registered `release` or one recognised from its files),
  checked against the `family` the caller asked for."""
  options = dict(options)
  fmt = release.format if release is not None else _recognise(snap, family)
  if fmt == "jaxtok":
    meta = snap.read_json(ckpt_format.CONFIG_FILE)
    p = Plan("jaxtok", str(meta["family"]), ckpt_format.WEIGHTS_FILE)
  elif fmt in ("titok", "titok_file"):
    p = _plan_titok(snap, fmt, release, options)
  elif fmt == "flextok":
    p = _plan_flextok(snap, options)
  elif fmt == "diffusers":
    p = Plan("diffusers", "vae", DIFFUSERS_WEIGHTS, options=options)
  else:  # fqgan
    p = _plan_fqgan(snap, release, options)
  if family is not None and family != p.family and not (
      fmt in ("titok", "titok_file") and family == "titok" and p.family == "one_d_piece"):
    raise HubError(f"family: {snap.ref} holds a {p.family} release ({FORMATS[p.format]}), "
                   f"not {family}; drop family= or name a {family} release")
  return p


def _plan_titok(snap: Snapshot, fmt: str, release: Release | None,
                options: dict[str, Any]) -> Plan:
  if fmt == "titok":
    weights = next((w for w in MIXIN_WEIGHTS if snap.has(w)), None)
    if weights is None:
      raise snap_missing(snap, " or ".join(MIXIN_WEIGHTS))
  else:
    weights = snap.ref.filename or ""
  config = options.pop("config", None)
  if config is None and snap.has("config.json"):
    config = _unwrap(snap.read_json("config.json"))
  if config is None and release is not None:
    config = release.official_config
  if config is None:
    raise HubError(f"config: {snap.ref} holds no config.json and is not a registered "
                   f"release; pass the official config (config=<dict or .yaml/.json path>)")
  if isinstance(config, (str, Path)):
    from jaxtok.tokenizers.titok.convert import read_official_config  # noqa: PLC0415
    config = read_official_config(config)
  if not _is_titok_config(config):
    raise HubError(f"config: expected an official TiTok config with model.vq_model, got keys "
                   f"{sorted(config) if isinstance(config, dict) else type(config).__name__}")
  family = official_family(config, options.get("one_d_piece"))
  return Plan(fmt, family, weights, dict(config), options)


def snap_missing(snap: Snapshot, what: str) -> HubError:
  return HubError(f"{snap.ref}: expected {what} in the repo, got files {sorted(snap.files)[:12]}")


def _plan_flextok(snap: Snapshot, options: dict[str, Any]) -> Plan:
  weights = snap.ref.filename or "model.safetensors"
  config = options.pop("config", None)
  if config is None and snap.ref.filename is None and snap.has("config.json"):
    config = _unwrap(snap.read_json("config.json"))
  if not snap.has(weights):
    raise snap_missing(snap, weights)
  return Plan("flextok", "flextok", weights, config, options)


def _plan_fqgan(snap: Snapshot, release: Release | None, options: dict[str, Any]) -> Plan:
  file = snap.ref.filename
  if file is None:
    raise _unknown(snap, "an FQGAN repo holds several checkpoints; name one")
  merged = dict(release.options) if release is not None else {}
  match = _FQGAN_FILE.search(file)
  if not merged and match:
    merged["variant"] = f"{match.group(1)}-{match.group(2)}"
  if "config" in options:
    merged.pop("variant", None)
  merged.update(options)
  if "variant" not in merged and "config" not in merged:
    raise HubError(f"variant: {snap.ref}: no FQGAN variant can be read from the file name; "
                   f"pass variant= (e.g. 'dual-16') or config=")
  return Plan("fqgan", "fqgan", file, None, merged)


def flextok_scaling_factor(snap: Snapshot, p: Plan, weights: Path) -> None:
  """Adds `vae_scaling_factor` to a FlexTok plan whose release config sets none but names its
  VAE's hub repo (`vae.hf_hub_path`): the official code reads that repo's `config.json`; so
  does this (from the hub or the HF cache). Where it cannot, and the release's VAE weights
  need it, the error names the argument to pass."""
  if "vae_scaling_factor" in p.options:
    return
  release, _ = read_release_config(weights, p.config)
  vae = release.get("vae") or {}
  hub_path = vae.get("hf_hub_path")
  if vae.get("scaling_factor") or not hub_path:
    return
  try:
    cfg = resolve(parse(f"hf:{hub_path}")).read_json("config.json")
    factor = cfg.get("scaling_factor") if isinstance(cfg, dict) else None
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
      raise HubError(f"hf:{hub_path}: config.json has no positive scaling_factor "
                     f"(got {factor!r})")
  except HubError as e:
    names: list[str] = []
    read_safetensors(weights, keep=lambda n: names.append(n) and False)
    if any(n.startswith("vae.vae.") for n in names):
      raise HubError(f"vae_scaling_factor: {snap.ref}'s release config sets no VAE "
                     f"scaling_factor and names hf_hub_path={hub_path!r}, whose config.json "
                     f"could not be read ({e}); pass vae_scaling_factor= (the scaling_factor "
                     f"of that VAE's config.json)") from e
    return
  p.options["vae_scaling_factor"] = float(factor)


__all__ = ["CONVERTER", "FAMILIES", "FORMATS", "Plan", "flextok_scaling_factor", "plan"]
