"""FQGAN (arXiv 2411.16681): a 2-D VQGAN with a factorized codebook and semantic branches.

`config` (FQGANConfig), `model` (FQGAN), `variants` (released Dual / Triple and CPU-sized
configs, the same-bits single-codebook baseline) and `convert` (official `.pt` -> jaxtok).
"""
from jaxtok.tokenizers.fqgan.config import FQGANConfig
from jaxtok.tokenizers.fqgan.model import FQGAN
from jaxtok.tokenizers.fqgan.variants import VARIANTS, released, single_codebook

__all__ = ["FQGAN", "FQGANConfig", "VARIANTS", "released", "single_codebook"]
