r"""One-D-Piece training configs (arXiv 2501.10064): TiTok with tail-token-drop.

One-D-Piece trains the two-stage TiTok recipe with tail-token-drop (a random number of
trailing tokens is dropped before decoding, so any prefix decodes to an image):

  python -m jaxtok.trainers.train \
      --config jaxtok/configs/one_d_piece.py:variant=S-256,recipe=stage1 --workdir runs/odp_s1 \
      --config.teacher=/path/to/maskgit-vqgan-imagenet-f16-256.bin
  python -m jaxtok.trainers.train \
      --config jaxtok/configs/one_d_piece.py:variant=S-256,recipe=stage2 --workdir runs/odp_s2 \
      --config.init_from=runs/odp_s1/export
  # CPU: a tiny One-D-Piece on the bundled photos (same budget as titok.py:tiny).
  python -m jaxtok.trainers.train --config jaxtok/configs/one_d_piece.py:tiny --workdir runs/odp
  # One training step with tiny sizes (test suite):
  python -m jaxtok.trainers.train --config jaxtok/configs/one_d_piece.py:smoke --workdir /tmp/s

The optimisation settings are TiTok's (see jaxtok/configs/titok.py); the model variants
(with `tail_token_drop=True`) come from `jaxtok.tokenizers.one_d_piece.VARIANTS`.
"""
from __future__ import annotations

from jaxtok.configs import common, titok
from jaxtok.configs.common import TrainConfig


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "variant=S-256,recipe=stage1[,smoke]" or "tiny[,smoke]"."""
  a = common.parse_arg(arg, variant="S-256", recipe="stage1", tiny=False, smoke=False)
  config = TrainConfig()
  if a["tiny"]:
    config = titok.tiny(config)
    config.name = "one_d_piece_tiny"
    config.model.overrides["tail_token_drop"] = True
    config.model.family, config.model.variant = "one_d_piece", "tiny"
  else:
    config.name = f"one_d_piece_{a['variant']}_{a['recipe']}"
    config.model.family, config.model.variant = "one_d_piece", a["variant"]
    config = titok.official(config, a["recipe"])
  if a["smoke"]:
    config = common.smoke(config)
    head = config.model.overrides.get("head", "pixel" if config.recipe == "single"
                                      else "two_stage")
    config.model.overrides = {**config.model.overrides, **titok.smoke_model(head),
                              "tail_token_drop": True}
    config.data.resolution = 32
    if config.recipe == "stage1":
      config.teacher = "random"
    config.name += "_smoke"
  return config
