"""Tokenizer model families: THE one registry (DESIGN.md §1).

`TOKENIZERS[name]` is a `Family`: the model class, its config dataclass and its named
variants. `jaxtok.load`, the trainer and the converter all resolve families through
`get_family`. Adding a family = one model file + one line here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from jaxtok.tokenizers import flextok, fqgan, one_d_piece, titok, vae


@dataclasses.dataclass(frozen=True)
class Family:
  """A tokenizer family.

  Attributes:
    name: registry key ("titok", "one_d_piece").
    model_class: the `nnx.Module` class, built as `model_class(config, rngs=...)`.
    config_class: its config dataclass (with `to_dict` / `from_dict`).
    variants: variant name -> config instance (every family has `tiny` and `smoke`).
  """
  name: str
  model_class: type
  config_class: type
  variants: Mapping[str, Any]

  def variant(self, name: str) -> Any:
    """A fresh (mutable) copy of the config of variant `name`."""
    if name not in self.variants:
      raise ValueError(f"variant: {self.name} has no variant {name!r}; expected one of "
                       f"{sorted(self.variants)}")
    return self.config_class.from_dict(self.variants[name].to_dict())


TOKENIZERS: dict[str, Family] = {
    "titok": Family("titok", titok.TiTok, titok.TiTokConfig, titok.VARIANTS),
    "one_d_piece": Family("one_d_piece", one_d_piece.OneDPiece, titok.TiTokConfig,
                          one_d_piece.VARIANTS),
    "flextok": Family("flextok", flextok.FlexTok, flextok.FlexTokConfig, flextok.VARIANTS),
    "fqgan": Family("fqgan", fqgan.FQGAN, fqgan.FQGANConfig, fqgan.VARIANTS),
    "vae": Family("vae", vae.AutoencoderKL, vae.AutoencoderKLConfig, vae.VARIANTS),
}


def get_family(name: str) -> Family:
  """The registered family `name`; ValueError listing the registered names otherwise."""
  if name not in TOKENIZERS:
    raise ValueError(f"family: expected one of {sorted(TOKENIZERS)}, got {name!r}")
  return TOKENIZERS[name]


def parse_variant(name: str) -> tuple[Family, str]:
  """`"family:variant"` -> (Family, variant name), both checked."""
  if not isinstance(name, str) or ":" not in name:
    raise ValueError(f"variant: expected 'family:variant' (e.g. 'titok:S-128'), got {name!r}")
  family, variant = name.split(":", 1)
  fam = get_family(family)
  fam.variant(variant)  # Raises with the list of variants.
  return fam, variant


def family_of(model: Any) -> Family:
  """The family of `model`: the registered class nearest in its MRO (OneDPiece before TiTok)."""
  by_class = {fam.model_class: fam for fam in TOKENIZERS.values()}
  for cls in type(model).__mro__:
    if cls in by_class:
      return by_class[cls]
  raise ValueError(f"model: expected an instance of one of "
                   f"{sorted(f.model_class.__name__ for f in TOKENIZERS.values())}, got "
                   f"{type(model).__name__}")


__all__ = ["Family", "TOKENIZERS", "family_of", "get_family", "parse_variant"]
