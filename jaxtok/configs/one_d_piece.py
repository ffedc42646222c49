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
(with `tail_token_drop=True`) come from `jaxtok.tokenizers.titok.one_d_piece.VARIANTS`.
"""
from __future__ import annotations

from jaxtok.configs import titok
from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig, parse_arg


def get_config(arg: str | None = None) -> TrainConfig:
  """`arg`: "variant=S-256,recipe=stage1[,smoke]", "tiny[,smoke]" (or just "smoke") or
  "finetune[,smoke]" (with `--config.init_from=`)."""
  a = parse_arg(arg, variant="S-256", recipe="stage1", tiny=False, smoke=False, finetune=False)
  config = TrainConfig()
  if a["finetune"]:  # Tail-token-drop stays on: every prefix keeps decoding.
    return titok.finetune_titok(config, "one_d_piece", a["smoke"])
  if a["tiny"]:
    config = titok.tiny(config, family="one_d_piece")
  else:
    config.name = f"one_d_piece_{a['variant']}_{a['recipe']}"
    config.family = "one_d_piece"
    config.model = get_family("one_d_piece").variant(a["variant"])
    config = titok.official(config, a["recipe"])
  if a["smoke"]:
    config = titok.make_smoke(config)
  return config
