"""Tokenizer model families (DESIGN.md §1).

`TOKENIZERS[family]` is the model class, `CONFIGS[family]` its config dataclass and
`VARIANTS[family]` its named configurations.
"""
from jaxtok.tokenizers import one_d_piece, titok
from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig, MaskGITVQGAN
from jaxtok.tokenizers.titok import TiTok, TiTokConfig

TOKENIZERS = {"titok": TiTok, "one_d_piece": one_d_piece.OneDPiece}
CONFIGS = {"titok": TiTokConfig, "one_d_piece": TiTokConfig}
VARIANTS = {"titok": titok.VARIANTS, "one_d_piece": one_d_piece.VARIANTS}

__all__ = ["CONFIGS", "MaskGITConfig", "MaskGITVQGAN", "TOKENIZERS", "TiTok", "TiTokConfig",
           "VARIANTS"]
