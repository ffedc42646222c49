"""A PyTorch model with the shapes of jaxtok's two-stage TiTok, the same-run speed baseline.

Not a port of the official code: the same layer shapes and the same kind of ops (pre-LN ViT
with a packed qkv projection and `F.scaled_dot_product_attention`, exact GELU, cosine VQ
over a 4096 x 12 codebook, a MaskGIT-VQGAN conv decoder with GroupNorm(32) and nearest x2
upsampling, NCHW as the official PyTorch code), so a jaxtok/torch ratio timed in one run
says how the two frameworks do on the same work. Random weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jaxtok.tokenizers.maskgit_vqgan import MaskGITConfig
from jaxtok.tokenizers.titok import TiTokConfig


class Block(nn.Module):
  """x + out(SDPA(qkv(ln_1 x))); x + c_proj(GELU(c_fc(ln_2 x)))."""

  def __init__(self, width: int, heads: int, mlp_ratio: float):
    super().__init__()
    self.heads = heads
    self.ln_1 = nn.LayerNorm(width)
    self.qkv = nn.Linear(width, 3 * width)
    self.out = nn.Linear(width, width)
    self.ln_2 = nn.LayerNorm(width)
    self.c_fc = nn.Linear(width, int(width * mlp_ratio))
    self.c_proj = nn.Linear(int(width * mlp_ratio), width)

  def attention(self, x: torch.Tensor) -> torch.Tensor:
    b, t, w = x.shape
    qkv = self.qkv(self.ln_1(x)).reshape(b, t, 3, self.heads, w // self.heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v)
    return self.out(y.transpose(1, 2).reshape(b, t, w))

  def mlp(self, x: torch.Tensor) -> torch.Tensor:
    return self.c_proj(F.gelu(self.c_fc(self.ln_2(x))))

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = x + self.attention(x)
    return x + self.mlp(x)


class ViT(nn.Module):

  def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float):
    super().__init__()
    self.blocks = nn.ModuleList([Block(width, heads, mlp_ratio) for _ in range(depth)])

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for blk in self.blocks:
      x = blk(x)
    return x


class ResBlock(nn.Module):
  """GN-SiLU-conv3x3 twice (bias-free), residual x or a 1x1 of h (MaskGIT layout)."""

  def __init__(self, cin: int, cout: int):
    super().__init__()
    self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
    self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
    self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
    self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
    self.short = nn.Conv2d(cout, cout, 1, bias=False) if cin != cout else None

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = self.conv1(F.silu(self.norm1(x)))
    h = self.conv2(F.silu(self.norm2(h)))
    return h + (x if self.short is None else self.short(h))


class PixelDecoder(nn.Module):
  """MaskGIT VQGAN decoder `[B, Z, g, g] -> [B, 3, 16g, 16g]`, staged as jaxtok's levels."""

  def __init__(self, c: MaskGITConfig):
    super().__init__()
    hid, mult, n = c.hidden_channels, c.channel_mult, len(c.channel_mult)
    top = hid * mult[-1]
    self.conv_in = nn.Conv2d(c.z_channels, top, 3, padding=1)
    self.mid = nn.Sequential(*[ResBlock(top, top) for _ in range(c.num_res_blocks)])
    levels = []
    for lvl in range(n):
      cin = hid * (mult[-1] if lvl == n - 1 else mult[lvl + 1])
      cout = hid * mult[lvl]
      mods = [ResBlock(cin if i == 0 else cout, cout) for i in range(c.num_res_blocks)]
      if lvl:
        mods += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(cout, cout, 3, padding=1)]
      levels.append(nn.Sequential(*mods))
    self.up = nn.ModuleList(levels)
    self.norm_out = nn.GroupNorm(32, hid * mult[0], eps=1e-6)
    self.conv_out = nn.Conv2d(hid * mult[0], c.num_channels, 3, padding=1)

  def stages(self):
    """`[(name, fn)]` in execution order (jaxtok's `profile_titok` stage names)."""
    out = [("conv_in+mid", lambda x: self.mid(self.conv_in(x)))]
    out += [(f"up{lvl}", self.up[lvl]) for lvl in reversed(range(len(self.up)))]
    out.append(("norm_out+conv_out", lambda x: self.conv_out(F.silu(self.norm_out(x)))))
    return out

  def forward(self, z: torch.Tensor) -> torch.Tensor:
    for _, fn in self.stages():
      z = fn(z)
    return z


class PixelEncoder(nn.Module):
  """MaskGIT VQGAN encoder + nearest-code lookup: the frozen stage-1 teacher's shape."""

  def __init__(self, c: MaskGITConfig):
    super().__init__()
    hid, mult, n = c.hidden_channels, c.channel_mult, len(c.channel_mult)
    mods = [nn.Conv2d(c.num_channels, hid, 3, padding=1, bias=False)]
    cin = hid
    for i in range(n):
      for _ in range(c.num_res_blocks):
        mods.append(ResBlock(cin, hid * mult[i]))
        cin = hid * mult[i]
      if i != n - 1:
        mods.append(nn.AvgPool2d(2))
    mods += [ResBlock(cin, cin) for _ in range(c.num_res_blocks)]
    mods += [nn.GroupNorm(32, cin, eps=1e-6), nn.SiLU(), nn.Conv2d(cin, c.z_channels, 1)]
    self.net = nn.Sequential(*mods)
    self.codebook = nn.Parameter(torch.randn(c.codebook_size, c.z_channels))

  def forward(self, images: torch.Tensor) -> torch.Tensor:
    z = self.net(images).permute(0, 2, 3, 1)  # [B, g, g, Z]
    d = (z.square().sum(-1, keepdim=True) - 2 * z @ self.codebook.T
         + self.codebook.square().sum(-1))
    return d.argmin(-1)


class TorchTiTok(nn.Module):
  """Two-stage TiTok shapes: encoder ViT, cosine VQ, decoder ViT -> code logits, pixel decoder."""

  def __init__(self, c: TiTokConfig):
    super().__init__()
    self.c = c
    we, wd, k, g = c.enc_width, c.dec_width, c.num_latent_tokens, c.enc_grid
    self.patch_embed = nn.Conv2d(3, we, c.enc_patch_size, stride=c.enc_patch_size)
    self.enc_cls = nn.Parameter(torch.randn(1, 1, we) * we ** -0.5)
    self.enc_pos = nn.Parameter(torch.randn(1, g * g + 1, we) * we ** -0.5)
    self.latents = nn.Parameter(torch.randn(1, k, we) * we ** -0.5)
    self.enc_ln_pre, self.enc_ln_post = nn.LayerNorm(we), nn.LayerNorm(we)
    self.encoder = ViT(we, c.enc_depth, c.enc_heads, c.mlp_ratio)
    self.enc_out = nn.Linear(we, c.token_size)
    self.codebook = nn.Parameter(torch.randn(c.codebook_size, c.token_size))
    gd = c.dec_grid
    self.dec_embed = nn.Linear(c.token_size, wd)
    self.dec_pos = nn.Parameter(torch.randn(1, gd * gd + 1 + k, wd) * wd ** -0.5)
    self.mask_token = nn.Parameter(torch.randn(1, gd * gd + 1, wd) * wd ** -0.5)
    self.dec_ln_pre, self.dec_ln_post = nn.LayerNorm(wd), nn.LayerNorm(wd)
    self.decoder = ViT(wd, c.dec_depth, c.dec_heads, c.mlp_ratio)
    self.ffn_0 = nn.Linear(wd, 2 * wd)
    self.ffn_2 = nn.Linear(2 * wd, c.pixel_codebook_size)
    pc = c.pixel_decoder or MaskGITConfig()
    self.pixel_codebook = nn.Parameter(torch.randn(c.pixel_codebook_size, pc.z_channels))
    self.pixel_decoder = PixelDecoder(pc)

  def tokens_in(self, images: torch.Tensor) -> torch.Tensor:
    """`[B, 3, S, S]` -> the encoder ViT's input `[B, 1 + g*g + K, W]`."""
    x = self.patch_embed(images).flatten(2).transpose(1, 2)
    b = x.shape[0]
    x = torch.cat([self.enc_cls.expand(b, -1, -1), x], 1) + self.enc_pos
    return self.enc_ln_pre(torch.cat([x, self.latents.expand(b, -1, -1)], 1))

  def quantize(self, z: torch.Tensor):
    zn, cb = F.normalize(z, dim=-1), F.normalize(self.codebook, dim=-1)
    ids = (zn @ cb.T).argmax(-1)
    zq = cb[ids]
    return zn + (zq - zn).detach(), ids, F.mse_loss(zn, zq.detach())

  def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
    x = self.encoder(self.tokens_in(images))
    return self.enc_out(self.enc_ln_post(x[:, -self.c.num_latent_tokens:]))

  def encode(self, images: torch.Tensor) -> torch.Tensor:
    return self.quantize(self.encode_latents(images))[1]

  def logits(self, zq: torch.Tensor) -> torch.Tensor:
    b, gd = zq.shape[0], self.c.dec_grid
    x = torch.cat([self.mask_token.expand(b, -1, -1), self.dec_embed(zq)], 1) + self.dec_pos
    x = self.decoder(self.dec_ln_pre(x))
    h = self.dec_ln_post(x[:, 1:1 + gd * gd])
    return self.ffn_2(torch.tanh(self.ffn_0(h)))  # [B, g*g, N_pix]

  def decode(self, ids: torch.Tensor) -> torch.Tensor:
    b, gd = ids.shape[0], self.c.dec_grid
    soft = self.logits(F.normalize(self.codebook, dim=-1)[ids]).softmax(-1) @ self.pixel_codebook
    return self.pixel_decoder(soft.transpose(1, 2).reshape(b, -1, gd, gd))

  def stage1_loss(self, images: torch.Tensor, target_ids: torch.Tensor) -> torch.Tensor:
    """Proxy-code CE + VQ loss (TiTok stage 1)."""
    zq, _, vq_loss = self.quantize(self.encode_latents(images))
    logits = self.logits(zq)
    return F.cross_entropy(logits.flatten(0, 1), target_ids.flatten()) + vq_loss
