"""FlexTok (arXiv 2502.13967): registers, FSQ, nested dropout, a rectified-flow decoder.

`config` (FlexTokConfig), `model` (FlexTok), `variants` (published sizes and CPU-sized
configs), `official` (the release's Hydra metadata -> FlexTokConfig) and `convert` (official
weights -> jaxtok).
"""
from jaxtok.tokenizers.flextok.config import FlexTokConfig
from jaxtok.tokenizers.flextok.model import FlexTok, FlexTokDecoder, FlexTokEncoder
from jaxtok.tokenizers.flextok.variants import SIZES, VARIANTS, published_config

__all__ = ["FlexTok", "FlexTokConfig", "FlexTokDecoder", "FlexTokEncoder", "SIZES", "VARIANTS",
           "published_config"]
