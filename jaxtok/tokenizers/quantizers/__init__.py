"""Quantizers: one shared core (`core.py`) and thin NNX modules over it (DESIGN.md §4)."""
from jaxtok.tokenizers.quantizers.stats import CodebookStats, EmaState
from jaxtok.tokenizers.quantizers.vq import VectorQuantizer

__all__ = ["CodebookStats", "EmaState", "VectorQuantizer"]
