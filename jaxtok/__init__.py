"""jaxtok: discrete 1D image tokenizers in JAX/Flax NNX.

The public API (`jaxtok.api`):

    import jaxtok
    tok = jaxtok.load("titok:S-128")    # or a checkpoint directory
    tokens = tok.encode(images)         # [B, H, W, 3] uint8 / float [0, 1] -> int32 [B, K]
    recon = tok.decode(tokens)          # float32 [B, H, W, 3] in [0, 1]
"""
__version__ = "0.1.0"

from jaxtok.api import Tokenizer, available_variants, load, save

__all__ = ["Tokenizer", "available_variants", "load", "save", "__version__"]
