"""Frozen auxiliary networks shared by evaluation and training (docs/design.md §1).

`inception` (the TF-2015 FID Inception), `perceptual` (LPIPS/VGG and an Inception feature
distance), `discriminator` (TiTok's GAN discriminator), `vit` (the DINOv2 / CLIP vision towers)
and `teachers` (frozen semantic teachers: those towers and an Inception stand-in).
"""
