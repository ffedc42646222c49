"""Quantizers: one shared core (`core.py`) and thin NNX modules over it (DESIGN.md §4).

`QUANTIZERS` maps a config name to the module class.
"""
from jaxtok.tokenizers.quantizers.factorized import FactorizedVectorQuantizer
from jaxtok.tokenizers.quantizers.fsq import FiniteScalarQuantizer
from jaxtok.tokenizers.quantizers.stats import CodebookStats, EmaState
from jaxtok.tokenizers.quantizers.vq import VectorQuantizer

QUANTIZERS = {
    "vq": VectorQuantizer,
    "factorized_vq": FactorizedVectorQuantizer,
    "fsq": FiniteScalarQuantizer,
}

__all__ = [
    "QUANTIZERS",
    "CodebookStats",
    "EmaState",
    "FactorizedVectorQuantizer",
    "FiniteScalarQuantizer",
    "VectorQuantizer",
]
