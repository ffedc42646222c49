"""`ResidualVectorQuantizer` (residual VQ, SoundStream arXiv 2107.03312 Algorithm 1) over
`VectorQuantizer` and `core.py`.

Depth l quantizes the residual the depths before it left: r_0 = x, q_l = VQ_l(r_l) (its
straight-through / rotation-trick output), r_{l+1} = r_l - sg(q_l); the output is sum_l q_l.
As in lucidrains' `ResidualVQ` (quant_grad_frac = 0) every depth passes the gradient of the
output to x through its own estimator, and no depth's gradient reaches the depths before it
through the residual. Codebooks are separate per depth or one shared by all depths
(`shared_codebook`); a shared codebook's statistics / EMA update is one step over the residuals
of every kept depth at the end of the call (lucidrains' semantics).

Quantizer dropout (SoundStream): in train mode with `quantize_dropout`, each call keeps the
first k + 1 depths, k drawn uniformly from [dropout_cutoff, depth); dropped depths contribute
nothing, their ids are -1, their losses 0, and their codebook state is left as it was.
`depth=` of a call keeps a fixed prefix instead (coarse codes, or a given dropout draw).

Ids: `[..., depth]` int32, depth l's code in [0, num_codes) or -1 where dropped; a `.jtok` file
codes them as `depth` ids per token (stacked digits of radix num_codes).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxtok.tokenizers.quantizers import core
from jaxtok.tokenizers.quantizers.vq import VectorQuantizer


class ResidualVectorQuantizer(nnx.Module):
  """Residual VQ of any depth, shared or separate codebooks, with quantizer dropout.

  Attributes:
    layers: `nnx.List` of `VectorQuantizer`s (one when the codebook is shared).
    depth: D quantizers.
    num_codes: K codes per codebook.
    ids_per_token: D.
  """

  def __init__(self, num_codes: int, dim: int, *, depth: int = 4, code_dim: int | None = None,
               shared_codebook: bool = False, quantize_dropout: bool = False,
               dropout_cutoff: int = 0, rngs: nnx.Rngs, **vq_kwargs: Any):
    """Builds the quantizer.

    Args:
      num_codes: K codes per codebook.
      dim: feature size of the input/output.
      depth: D >= 1 residual quantizers.
      code_dim: the quantizers' width; when != dim, Linear projections dim -> code_dim -> dim
        (with bias) wrap the whole residual stack.
      shared_codebook: one codebook for every depth.
      quantize_dropout: in train mode keep a random prefix of depths (needs `rngs` in the call).
      dropout_cutoff: the fewest depths kept minus one (the draw is in [dropout_cutoff, D)).
      rngs: initialisation randomness.
      **vq_kwargs: `VectorQuantizer` keyword arguments of every depth (distance, beta, update,
        ema_decay, rotation_trick, dead_code_threshold, ...); num_heads must stay 1.
    """
    if depth < 1:
      raise ValueError(f"depth must be >= 1, got {depth}")
    if dim < 1:
      raise ValueError(f"dim must be >= 1, got {dim}")
    if not 0 <= dropout_cutoff < depth:
      raise ValueError(f"dropout_cutoff must be in [0, depth={depth}), got {dropout_cutoff}")
    if vq_kwargs.get("num_heads", 1) != 1:
      raise ValueError(f"num_heads: residual VQ takes single-head quantizers, got "
                       f"{vq_kwargs['num_heads']}")
    if "code_dim" in vq_kwargs:
      raise ValueError("code_dim: pass it to ResidualVectorQuantizer (it projects the stack)")
    code_dim = dim if code_dim is None else int(code_dim)
    if code_dim < 1:
      raise ValueError(f"code_dim must be >= 1, got {code_dim}")
    self.num_codes = int(num_codes)
    self.dim = int(dim)
    self.code_dim = code_dim
    self.depth = int(depth)
    self.shared_codebook = bool(shared_codebook)
    self.quantize_dropout = bool(quantize_dropout) and depth > 1
    self.dropout_cutoff = int(dropout_cutoff)
    if code_dim != dim:
      self.project_in = nnx.Linear(dim, code_dim, rngs=rngs)
      self.project_out = nnx.Linear(code_dim, dim, rngs=rngs)
    else:
      self.project_in = None
      self.project_out = None
    n_books = 1 if self.shared_codebook else self.depth
    self.layers = nnx.List([VectorQuantizer(num_codes, code_dim, **vq_kwargs, rngs=rngs)
                            for _ in range(n_books)])

  @property
  def ids_per_token(self) -> int:
    return self.depth

  @property
  def train_needs_rngs(self) -> bool:
    """True when a train-mode call draws (quantizer dropout): pass it `rngs`."""
    return self.quantize_dropout

  def layer(self, i: int) -> VectorQuantizer:
    """The quantizer of depth i (0-based)."""
    return self.layers[0 if self.shared_codebook else i]

  def _keep(self, depth, train: bool, rngs) -> tuple[Any, bool]:
    """([D] keep flags: a Python tuple of bools, or a traced bool array), traced?"""
    if depth is not None:
      if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= self.depth:
        raise ValueError(f"depth must be an int in [1, {self.depth}], got {depth!r}")
      return tuple(i < depth for i in range(self.depth)), False
    if train and self.quantize_dropout:
      if rngs is None:
        raise ValueError("rngs: quantize_dropout in train mode draws the kept depth; pass "
                         "rngs (an nnx.Rngs with a 'dropout' or default stream, or a key)")
      key = rngs.dropout() if isinstance(rngs, nnx.Rngs) else rngs
      last = jax.random.randint(key, (), self.dropout_cutoff, self.depth)
      return jnp.arange(self.depth) <= last, True
    return (True,) * self.depth, False

  def __call__(self, z: jax.Array, train: bool = False, rngs: nnx.Rngs | jax.Array | None = None,
               depth: int | None = None) -> tuple[jax.Array, dict]:
    """Quantizes z.

    Args:
      z: `[..., dim]` float (computed in float32).
      train: update statistics / EMA codebooks / dead codes; quantizer dropout if enabled.
      rngs: the dropout draw (train mode with quantize_dropout): an `nnx.Rngs` (its
        "dropout" stream) or a PRNG key.
      depth: keep only the first `depth` quantizers (overrides the dropout draw).

    Returns:
      (zq, aux): zq `[..., dim]` in z's dtype; aux = {"ids": int32 `[..., D]` (-1 where
      dropped), "codes": `[..., dim]` float32 sum of the kept codes, "loss",
      "commitment_loss", "codebook_loss", "entropy_loss" (sums over kept depths),
      "layer_losses": `[D]` each depth's loss (0 where dropped), "num_kept": () int32,
      "stats": this batch's usage averaged over kept depths, plus "<name>/<i>" per depth}.
    """
    core.check_features("z", z, self.dim)
    lead = z.shape[:-1]
    x = jnp.asarray(z, jnp.float32).reshape(-1, self.dim)
    if self.project_in is not None:
      x = self.project_in(x)
    keep, traced = self._keep(depth, train, rngs)
    n = x.shape[0]
    residual = x
    out = jnp.zeros_like(x)
    plain = jnp.zeros_like(x)
    ids, residuals, totals, stats = [], [], {}, {}
    layer_losses = []
    for i in range(self.depth):
      if not traced and not keep[i]:
        ids.append(jnp.full((n,), -1, jnp.int32))
        layer_losses.append(jnp.zeros((), jnp.float32))
        continue
      vq = self.layer(i)
      layer_train = train and not self.shared_codebook
      # A snapshot of the values (nnx.state holds the Variables themselves, which the call
      # below updates in place).
      before = (jax.tree.map(lambda a: a, nnx.state(vq, nnx.Not(nnx.Param)))
                if (layer_train and traced) else None)
      book = vq.codebook[...] if before is not None and vq.dead_code_threshold > 0 else None
      q, aux = vq(residual, train=layer_train)
      k = jnp.asarray(keep[i], jnp.float32)
      if before is not None:
        # A dropped depth leaves its statistics, EMA state and codebook untouched.
        after = nnx.state(vq, nnx.Not(nnx.Param))
        nnx.update(vq, jax.tree.map(lambda a, b, k=keep[i]: jnp.where(k, a, b), after, before))
        if book is not None:
          vq.codebook[...] = jnp.where(keep[i], jax.lax.stop_gradient(vq.codebook[...]),
                                       jax.lax.stop_gradient(book))
      out = out + k * q
      plain = plain + k * aux["codes"]
      residuals.append((residual, k))
      residual = residual - jax.lax.stop_gradient(q)
      ids.append(jnp.where(keep[i], aux["ids"], -1).astype(jnp.int32))
      for name in ("loss", "commitment_loss", "codebook_loss", "entropy_loss"):
        totals[name] = totals.get(name, 0.0) + k * aux[name]
      layer_losses.append(k * aux["loss"])
      for name, v in aux["stats"].items():
        if "/" not in name:
          stats[f"{name}/{i}"] = v
    if train and self.shared_codebook:
      # One update of the shared codebook over the residuals of every kept depth.
      flat = jnp.concatenate([r for r, _ in residuals], axis=0)
      w = jnp.concatenate([jnp.broadcast_to(k, (n,)) for _, k in residuals], axis=0)
      self.layers[0](jax.lax.stop_gradient(flat), train=True, weights=w)
    num_kept = jnp.sum(jnp.asarray(keep, jnp.int32))
    kept_f = jnp.maximum(num_kept, 1).astype(jnp.float32)
    kept_flags = jnp.asarray(keep, jnp.float32)
    for name in ("usage", "perplexity", "entropy_bits", "dead_codes"):
      per = jnp.stack([stats.get(f"{name}/{i}", jnp.zeros((), jnp.float32))
                       for i in range(self.depth)])
      stats[name] = jnp.sum(per * kept_flags) / kept_f
    if self.project_out is not None:
      out = self.project_out(out)
      plain = self.project_out(plain)
    aux = {
        "ids": jnp.stack(ids, axis=-1).reshape(*lead, self.depth),
        "codes": jax.lax.stop_gradient(plain).reshape(*lead, self.dim),
        **{k: jnp.asarray(v, jnp.float32) for k, v in totals.items()},
        "layer_losses": jnp.stack(layer_losses),
        "num_kept": num_kept,
        "stats": stats,
    }
    return out.reshape(*lead, self.dim).astype(z.dtype), aux

  def lookup(self, ids: jax.Array) -> jax.Array:
    """Ids `[..., k]` (k <= D; -1 = dropped depth) -> `[..., dim]` float32 summed codes.

    A prefix of k < D depths (coarse codes) is the same as the full ids with -1 after it.
    """
    if not hasattr(ids, "shape") or not jnp.issubdtype(jnp.asarray(ids).dtype, jnp.integer):
      raise ValueError(f"ids must be an int array [..., <= {self.depth}], got {ids!r:.80}")
    ids = jnp.asarray(ids, jnp.int32)
    if ids.ndim < 1 or not 1 <= ids.shape[-1] <= self.depth:
      raise ValueError(f"ids must have shape [..., k] with 1 <= k <= {self.depth}, got "
                       f"{tuple(ids.shape)}")
    if core.is_concrete(ids) and ids.size:
      lo, hi = int(ids.min()), int(ids.max())
      if lo < -1 or hi >= self.num_codes:
        raise ValueError(f"ids must lie in [-1, {self.num_codes}) (-1 = dropped), got values "
                         f"in [{lo}, {hi}]")
    lead = ids.shape[:-1]
    flat = ids.reshape(-1, ids.shape[-1])
    total = jnp.zeros((flat.shape[0], self.code_dim), jnp.float32)
    for i in range(ids.shape[-1]):
      vq = self.layer(i)
      cb = vq._codebook_heads()[0]
      valid = flat[:, i] >= 0
      codes = core.one_hot_lookup(jnp.where(valid, flat[:, i], 0), cb)
      total = total + jnp.where(valid[:, None], codes, 0.0)
    if self.project_out is not None:
      total = self.project_out(total)
    return total.reshape(*lead, self.dim)

  def running_stats(self) -> Mapping[str, jax.Array]:
    """Per-depth running statistics ("<name>/<i>", the shared codebook's once) and their mean."""
    out = {}
    per = [layer.running_stats() for layer in self.layers]
    for i, s in enumerate(per):
      for k, v in s.items():
        out[f"{k}/{i}"] = v
    for k in per[0]:
      out[k] = jnp.mean(jnp.stack([s[k] for s in per]))
    return out

  def reset_stats(self) -> None:
    """Zeroes every depth's running statistics."""
    for layer in self.layers:
      layer.reset_stats()
