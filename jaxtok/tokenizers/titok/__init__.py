"""TiTok (arXiv 2406.07550) and One-D-Piece (arXiv 2501.10064, TiTok + tail-token-drop).

`config` (TiTokConfig), `model` (TiTok), `variants` (released and CPU-sized configs),
`one_d_piece` (the thin One-D-Piece variant), `official` (official config files -> TiTokConfig)
and `convert` (official PyTorch weights -> jaxtok).
"""
from jaxtok.tokenizers.titok.config import HEADS, MODEL_SIZES, TiTokConfig
from jaxtok.tokenizers.titok.model import TiTok, TiTokDecoder, TiTokEncoder
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece
from jaxtok.tokenizers.titok.variants import PUBLISHED_PARAMS, VARIANTS, legacy_config

__all__ = ["HEADS", "MODEL_SIZES", "PUBLISHED_PARAMS", "OneDPiece", "TiTok", "TiTokConfig",
           "TiTokDecoder", "TiTokEncoder", "VARIANTS", "legacy_config"]
