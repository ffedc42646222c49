"""Test doubles shared by the eval and codec tests: a tokenizer of gray bands, smooth images."""
import numpy as np


class BlockTokenizer:
  """Tokens = mean gray level of each of K horizontal bands, quantized to V levels.

  Ordered like One-D-Piece: a prefix of L tokens decodes the first L bands and leaves the
  rest mid-gray, so quality grows with L.
  """

  def __init__(self, image_size=16, num_tokens=4, codebook_size=16, supports_prefix=True):
    self.image_size, self.num_tokens = image_size, num_tokens
    self.codebook_size, self.supports_prefix = codebook_size, supports_prefix
    self.family = "fake"

  def encode(self, images):
    x = np.asarray(images, np.float32) / 255.0
    bands = x.reshape(len(x), self.num_tokens, -1).mean(-1)
    return np.round(bands * (self.codebook_size - 1)).astype(np.int32)

  def decode(self, tokens):
    tokens = np.asarray(tokens)
    n, length = tokens.shape
    vals = np.full((n, self.num_tokens), 0.5, np.float32)
    vals[:, :length] = tokens / (self.codebook_size - 1)
    rows = np.repeat(vals, self.image_size // self.num_tokens, axis=1)
    return np.broadcast_to(rows[:, :, None, None], (n, self.image_size, self.image_size, 3)
                           ).astype(np.float32)


def make_smooth_images(n=12, size=16, seed=0):
  """uint8 [n, size, size, 3] images with mostly vertical structure (bands compress well)."""
  rng = np.random.default_rng(seed)
  rows = rng.random((n, size, 1, 1)) * 0.8 + 0.1
  noise = 0.05 * rng.standard_normal((n, size, size, 3))
  return np.round(np.clip(rows + noise, 0, 1) * 255).astype(np.uint8)
