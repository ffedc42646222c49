"""AutoencoderKL variants: Stable Diffusion / FLUX.1 f8 layouts and CPU-sized ones."""
import dataclasses

from jaxtok.tokenizers.vae.config import AutoencoderKLConfig

# Stable Diffusion v1/v2's f8 VAE (arXiv 2112.10752; its diffusers config): 4 latent channels.
F8C4 = AutoencoderKLConfig(image_size=256, block_out_channels=(128, 256, 512, 512),
                           layers_per_block=2, latent_channels=4, scaling_factor=0.18215)
# FLUX.1's f8 VAE layout (its diffusers config): 16 channels, no quant convs, shifted latents.
F8C16 = dataclasses.replace(F8C4, latent_channels=16, use_quant_conv=False,
                            use_post_quant_conv=False, scaling_factor=0.3611,
                            shift_factor=0.1159)
# 8 channels on the same layout (ours: scaling 1.0 until the latents' std is measured).
F8C8 = dataclasses.replace(F8C4, latent_channels=8, scaling_factor=1.0)
# CPU: 64 px images to 8 x 8 x 4 latents (f8), 32-64 channels, one ResNet per level.
TINY = AutoencoderKLConfig(image_size=64, block_out_channels=(32, 32, 64, 64),
                           layers_per_block=1, latent_channels=4, norm_num_groups=32,
                           scaling_factor=1.0)
# Seconds to train: 32 px to 4 x 4 x 4 latents (f8), 8-16 channels.
SMOKE = dataclasses.replace(TINY, image_size=32, block_out_channels=(8, 8, 16, 16),
                            norm_num_groups=8)

VARIANTS: dict[str, AutoencoderKLConfig] = {
    "f8c4": F8C4,
    "f8c8": F8C8,
    "f8c16": F8C16,
    "tiny": TINY,
    "smoke": SMOKE,
}

__all__ = ["VARIANTS"]
