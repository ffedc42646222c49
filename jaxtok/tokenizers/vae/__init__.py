"""AutoencoderKL (latent diffusion's KL autoencoder, diffusers layout): continuous tokens and
FlexTok's front end.

`config` (AutoencoderKLConfig, diffusers config files), `model` (AutoencoderKL), `variants`
and `convert` (diffusers weights -> jaxtok, `load_autoencoder`).
"""
from jaxtok.tokenizers.vae.config import FAMILY, AutoencoderKLConfig
from jaxtok.tokenizers.vae.model import AutoencoderKL
from jaxtok.tokenizers.vae.variants import VARIANTS

__all__ = ["FAMILY", "AutoencoderKL", "AutoencoderKLConfig", "VARIANTS"]
