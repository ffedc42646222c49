"""The released tokenizers `jaxtok.load("hf:...")` knows by name: the model zoo.

Each `Release` says which family's converter reads it, how its files are laid out (`format`,
see `jaxtok.hub.formats`) and what the README's zoo table shows: tokens x bits, image size,
the paper's reconstruction FID (ImageNet-1k val, 256 x 256, as the official README reports it;
None where the release's README gives none per checkpoint) and the weights' licence.

File names and configs were read from the official repositories: bytedance/1d-tokenizer
(README_TiTok.md, configs/infer/TiTok/*.yaml), turingmotors/One-D-Piece (README.md,
demo.ipynb: `pytorch_model.bin`; configs/one-d-piece_*.yaml), apple/ml-flextok (README.md
model zoo; `model.safetensors` with the Hydra config as `config.json` and in its
`__metadata__`; diffusers VAEs) and showlab/FQGAN (README.md: the `.pt` files of
ZechenBai/FQGAN).

A repository that is not listed still loads when its files have a known format
(`jaxtok.hub.formats.detect`); `official_config` is only needed for files that hold no config
(the legacy `fun-research/TiTok` `.bin` files, One-D-Piece repos without a `config.json`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

APACHE = "Apache-2.0"
APPLE_WEIGHTS = "Apple ML Research Model License"
CC_BY_NC = "CC-BY-NC-4.0"


@dataclasses.dataclass(frozen=True)
class Release:
  """One released checkpoint.

  Attributes:
    id: "ORG/NAME", or "ORG/NAME/FILE" for one file of a repo holding several.
    family: the jaxtok family of the converted model.
    format: how the repo lays out the files (a `jaxtok.hub.formats.FORMATS` key).
    name: the paper's model name ("TiTok-L-32").
    tokens: tokens x bits per image, as the zoo shows it.
    image_size: side of the square images it takes.
    rfid: the paper's reconstruction FID, or None.
    licence: the weights' licence.
    paper: arXiv id.
    official_config: the official config where no file of the release holds one.
    options: converter options the release needs (FQGAN's `variant`).
  """
  id: str
  family: str
  format: str
  name: str
  tokens: str
  image_size: int
  rfid: float | None
  licence: str
  paper: str
  official_config: Mapping[str, Any] | None = None
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _titok_config(enc: str, dec: str, tokens: int, *, codebook: int = 4096, token_size: int = 12,
                  l2: bool = True, legacy: bool = True, mode: str = "vq",
                  one_d_piece: bool = False) -> dict[str, Any]:
  """An official 1d-tokenizer / One-D-Piece config (`model.vq_model` + crop size)."""
  vq: dict[str, Any] = {"vit_enc_model_size": enc, "vit_dec_model_size": dec,
                        "vit_enc_patch_size": 16, "vit_dec_patch_size": 16,
                        "num_latent_tokens": tokens, "token_size": token_size,
                        "finetune_decoder": legacy}
  if mode == "vq":
    vq.update(codebook_size=codebook, use_l2_norm=l2, commitment_cost=0.25)
  else:
    vq["quantize_mode"] = mode
  if not legacy:
    vq["is_legacy"] = False
  model: dict[str, Any] = {"vq_model": vq}
  if one_d_piece:
    model["type"] = "one_d_piece"
    vq["strict_length_assertion"] = False
  return {"model": model, "dataset": {"preprocessing": {"crop_size": 256}}}


_TITOK = "2406.07550"
_SIZES = {"s": "small", "b": "base", "l": "large"}


def _titok(name: str, tokens: int, rfid: float, *, kind: str = "vq") -> list[Release]:
  """The hub releases of TiTok `name` (e.g. "bl64"): the Mixin repo, and for the three
  first models the legacy `.bin` file of fun-research/TiTok too."""
  enc, dec = _SIZES[name[0]], _SIZES[name[1]] if name[1] in _SIZES else _SIZES[name[0]]
  suffix = {"vq": "", "vq8k": "_vq8k", "vae": "_vae_c16"}[kind]
  label = f"TiTok-{name[:-len(str(tokens))].upper()}-{tokens}" + {"vq": "", "vq8k": " VQ",
                                                                   "vae": " VAE"}[kind]
  bits = {"vq": f"{tokens} x 12 bits", "vq8k": f"{tokens} x 13 bits",
          "vae": f"{tokens} x 16 floats"}[kind]
  config = _titok_config(enc, dec, tokens, codebook=8192 if kind == "vq8k" else 4096,
                         token_size={"vq": 12, "vq8k": 64, "vae": 16}[kind],
                         l2=kind == "vq", legacy=kind == "vq", mode="vae" if kind == "vae"
                         else "vq")
  out = [Release(f"yucornetto/tokenizer_titok_{name}{suffix}_imagenet", "titok", "titok",
                 label, bits, 256, rfid, APACHE, _TITOK, official_config=config)]
  if kind == "vq":
    out.append(Release(f"fun-research/TiTok/tokenizer_titok_{name}.bin", "titok", "titok_file",
                       label + " (legacy .bin)", bits, 256, rfid, APACHE, _TITOK,
                       official_config=config))
  return out


def _one_d_piece(size: str, rfid: float) -> Release:
  return Release(f"turing-motors/One-D-Piece-{size.upper()}-256", "one_d_piece", "titok",
                 f"One-D-Piece-{size.upper()}-256", "1-256 x 12 bits (any prefix)", 256, rfid,
                 APACHE, "2501.10064",
                 official_config=_titok_config(_SIZES[size], _SIZES[size], 256,
                                               one_d_piece=True))


def _flextok(enc: int, dec: int, data: str) -> Release:
  return Release(f"EPFL-VILAB/flextok_d{enc}_d{dec}_{data}", "flextok", "flextok",
                 f"FlexTok d{enc}-d{dec} ({data.upper()})",
                 "1-256 x 16 bits (FSQ 64,000; any prefix)", 256, None, APPLE_WEIGHTS,
                 "2502.13967")


def _flextok_vae(c: int) -> Release:
  return Release(f"EPFL-VILAB/flextok_vae_c{c}", "vae", "diffusers", f"FlexTok VAE c{c}",
                 f"32 x 32 x {c} floats (f8)", 256, None, APPLE_WEIGHTS, "2502.13967")


def _fqgan(kind: str, down: int, rfid: float) -> Release:
  grid = 256 // down
  ids = {"dual": 2, "triple": 3}[kind]
  return Release(f"ZechenBai/FQGAN/fqgan_{kind}_ds{down}.pt", "fqgan", "fqgan",
                 f"FQGAN-{kind.capitalize()} (down {down})",
                 f"{grid} x {grid} x {ids} x 14 bits", 256, rfid, CC_BY_NC, "2411.16681",
                 options={"variant": f"{kind}-{down}"})


RELEASES: dict[str, Release] = {r.id: r for r in [
    *_titok("l32", 32, 2.21), *_titok("b64", 64, 1.70), *_titok("s128", 128, 1.71),
    *_titok("bl64", 64, 2.06, kind="vq8k"), *_titok("bl128", 128, 1.49, kind="vq8k"),
    *_titok("sl256", 256, 1.03, kind="vq8k"),
    *_titok("ll32", 32, 1.61, kind="vae"), *_titok("bl64", 64, 1.25, kind="vae"),
    *_titok("bl128", 128, 0.84, kind="vae"),
    _one_d_piece("l", 1.08), _one_d_piece("b", 1.11), _one_d_piece("s", 1.48),
    _flextok(12, 12, "in1k"), _flextok(18, 18, "in1k"), _flextok(18, 28, "in1k"),
    _flextok(18, 28, "dfn"),
    _flextok_vae(4), _flextok_vae(8), _flextok_vae(16),
    _fqgan("dual", 16, 0.94), _fqgan("triple", 16, 0.76), _fqgan("dual", 8, 0.32),
    _fqgan("triple", 8, 0.24),
]}


def find_release(repo: str, filename: str | None) -> Release | None:
  """The registered release of `repo` (and `filename`, for repos of several files)."""
  return RELEASES.get(f"{repo}/{filename}" if filename else repo)


def files_of(repo: str) -> list[str]:
  """The registered files of a repo of several releases (e.g. ZechenBai/FQGAN's `.pt`s)."""
  return sorted(r.id[len(repo) + 1:] for r in RELEASES.values() if r.id.startswith(repo + "/"))


__all__ = ["RELEASES", "Release", "files_of", "find_release"]
