"""Tokenizer model families: THE one registry (docs/design.md §1).

`TOKENIZERS[name]` is a `Family`: the model class, its config dataclass, its named variants and
how it reads the official PyTorch weights. `jaxtok.load`, the trainer and the converter CLI all
resolve families through `get_family`. Adding a family = one package `jaxtok/tokenizers/<name>/`
(config.py, model.py, variants.py, convert.py) + one line here.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

from jaxtok.io import checkpoint as ckpt_format
from jaxtok.tokenizers import flextok, fqgan, interface, titok, vae
from jaxtok.tokenizers.flextok import convert as flextok_convert
from jaxtok.tokenizers.fqgan import convert as fqgan_convert
from jaxtok.tokenizers.titok import convert as titok_convert
from jaxtok.tokenizers.titok import one_d_piece
from jaxtok.tokenizers.vae import convert as vae_convert


@dataclasses.dataclass(frozen=True)
class Family:
  """A tokenizer family.

  Attributes:
    name: registry key ("titok", "one_d_piece").
    model_class: the `nnx.Module` class, built as `model_class(config, rngs=...)`.
    config_class: its config dataclass (with `to_dict` / `from_dict`).
    variants: variant name -> config instance (every family has `tiny` and `smoke`).
    convert: `(checkpoint, out, **options) -> Path`: an official release file (or directory)
      to a jaxtok checkpoint directory; its options are the family's (`--help` of the CLI).
    from_params: `(config, {official_key: array}) -> model`: official-layout weights into a
      model of the given config (the trainer's `init_from`); strict about keys and shapes.
    stage1_teacher: `(model config, weights file or "random", seed) -> module` with
      `module(images) -> ids`: the frozen proxy-code teacher of a two-stage recipe ("stage1"),
      or None for families without one.
  """
  name: str
  model_class: type
  config_class: type
  variants: Mapping[str, Any]
  convert: Callable[..., Any] | None = None
  from_params: Callable[[Any, Mapping[str, Any]], Any] | None = None
  stage1_teacher: Callable[[Any, str, int], Any] | None = None

  def variant(self, name: str) -> Any:
    """A fresh (mutable) copy of the config of variant `name`."""
    return interface.fresh_variant(self.name, self.config_class, self.variants, name)


TOKENIZERS: dict[str, Family] = {
    "titok": Family("titok", titok.TiTok, titok.TiTokConfig, titok.VARIANTS,
                    titok_convert.convert, titok_convert.titok_from_params,
                    titok_convert.stage1_teacher),
    "one_d_piece": Family("one_d_piece", one_d_piece.OneDPiece, titok.TiTokConfig,
                          one_d_piece.VARIANTS, titok_convert.convert,
                          titok_convert.one_d_piece_from_params,
                          titok_convert.stage1_teacher),
    "flextok": Family("flextok", flextok.FlexTok, flextok.FlexTokConfig, flextok.VARIANTS,
                      flextok_convert.convert, flextok_convert.params_into),
    "fqgan": Family("fqgan", fqgan.FQGAN, fqgan.FQGANConfig, fqgan.VARIANTS,
                    fqgan_convert.convert_fqgan, fqgan_convert.fqgan_from_params),
    "vae": Family("vae", vae.AutoencoderKL, vae.AutoencoderKLConfig, vae.VARIANTS,
                  vae_convert.convert_vae, vae_convert.params_from_diffusers),
}


def get_family(name: str) -> Family:
  """The registered family `name`; ValueError listing the registered names otherwise."""
  if name not in TOKENIZERS:
    raise ValueError(f"family: expected one of {sorted(TOKENIZERS)}, got {name!r}")
  return TOKENIZERS[name]


def available_variants() -> dict[str, list[str]]:
  """`{family: [variant, ...]}` of every registered family."""
  return {name: sorted(fam.variants) for name, fam in TOKENIZERS.items()}


def resolve_variant(name: str, arg: str = "variant", alternative: str = ""
                    ) -> tuple[Family, str]:
  """`"family:variant"`, or a bare variant name that exactly one family has -> (Family,
  variant name). ValueErrors name `arg`; `alternative` ("a checkpoint directory or ") is what
  else the caller would have accepted."""
  if ":" in name:
    family, variant = name.split(":", 1)
    fam = get_family(family)
    if variant not in fam.variants:
      raise ValueError(f"{arg}: {family} has no variant {variant!r}; expected one of "
                       f"{sorted(fam.variants)}")
    return fam, variant
  matches = [fam for fam in TOKENIZERS.values() if name in fam.variants]
  if len(matches) == 1:
    return matches[0], name
  if matches:
    raise ValueError(f"{arg}: variant {name!r} exists in several families; expected one of "
                     f"{[f'{fam.name}:{name}' for fam in matches]}")
  raise ValueError(f"{arg}: expected {alternative}a variant name 'family:variant' among "
                   f"{available_variants()}, got {name!r}")


def family_of(model: Any) -> Family:
  """The family of `model`: the registered class nearest in its MRO (OneDPiece before TiTok)."""
  by_class = {fam.model_class: fam for fam in TOKENIZERS.values()}
  for cls in type(model).__mro__:
    if cls in by_class:
      return by_class[cls]
  raise ValueError(f"model: expected an instance of one of "
                   f"{sorted(f.model_class.__name__ for f in TOKENIZERS.values())}, got "
                   f"{type(model).__name__}")


def read_dir_config(path: str | os.PathLike) -> tuple[Family, Any]:
  """(Family, config dataclass) of a jaxtok checkpoint directory's `config.json`."""
  meta = ckpt_format.read_meta(path)
  fam = get_family(meta["family"])
  return fam, ckpt_format.config_from_dict(fam.config_class, meta["config"])


def load_dir(path: str | os.PathLike) -> tuple[Family, Any]:
  """(Family, model) of a jaxtok checkpoint directory (`config.json` + `weights.safetensors`)."""
  fam, config = read_dir_config(path)
  arrays, key_impls = ckpt_format.read_weights(path)
  model = ckpt_format.model_from_arrays(fam.model_class, config, arrays, key_impls=key_impls,
                                        source=os.path.join(path, ckpt_format.WEIGHTS_FILE))
  return fam, model


__all__ = ["Family", "TOKENIZERS", "available_variants", "family_of", "get_family", "load_dir",
           "read_dir_config", "resolve_variant"]
