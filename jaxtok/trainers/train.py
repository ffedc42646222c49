r"""The jaxtok trainer: one sharded training loop for every tokenizer (DESIGN.md §5).

  python -m jaxtok.trainers.train --config jaxtok/configs/titok.py:tiny --workdir runs/tiny \
      [--config.total_steps=100 --config.optim.lr=3e-4 ...]

The same command runs on a laptop CPU, a GPU and every worker of a TPU pod (multi-process
settings: see `jaxtok.trainers.distributed`, or the --coordinator/--num_processes/--process_id
flags). The run is resumed automatically from the newest good checkpoint in `--workdir`,
then `config.resume`, then `config.init_from` (weights only), else starts from scratch.

Outputs in the workdir: `checkpoints/<step>/` (Orbax), `metrics.jsonl`, TensorBoard event
files in `tensorboard/`, reconstruction grids in `grids/` (`recon_grid.png` = latest: top
row held-out originals, bottom row reconstructions), and `export/` (the final EMA weights,
loadable with `jaxtok.load`).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxtok.configs.common import TrainConfig, to_json
from jaxtok.trainers import checkpoint as ckpt_lib
from jaxtok.trainers import distributed
from jaxtok.trainers import sharding as shd
from jaxtok.trainers import state as state_lib
from jaxtok.trainers.state import TrainState

_LOG = logging.getLogger("jaxtok.train")


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN/Inf; the message names the step and the offending terms."""


# ==========================================================================================
# Model, teacher and discriminator construction.
# ==========================================================================================
def model_class_and_config(spec) -> tuple[type, Any]:
  """(model class, model config) for a `ModelSpec`.

  `spec.family` is a key of `jaxtok.tokenizers.TOKENIZERS` (variants from
  `jaxtok.tokenizers.<family>.VARIANTS`), or "package.module:Class" for a custom model
  whose module defines `VARIANTS`.
  """
  if ":" in spec.family:
    mod_name, cls_name = spec.family.split(":", 1)
    module = importlib.import_module(mod_name)
    cls = getattr(module, cls_name)
  else:
    from jaxtok import tokenizers  # pylint: disable=g-import-not-at-top
    registry = {k: f.model_class for k, f in tokenizers.TOKENIZERS.items()}
    if "titok" not in registry:  # The registry is filled by jaxtok.tokenizers/__init__.
      from jaxtok.tokenizers.titok import TiTok  # pylint: disable=g-import-not-at-top
      registry["titok"] = TiTok
    if spec.family not in registry:
      raise ValueError(f"model.family: expected one of {sorted(registry)} or "
                       f"'module:Class', got {spec.family!r}")
    cls = registry[spec.family]
    module = importlib.import_module(f"jaxtok.tokenizers.{spec.family}")
  variants = getattr(module, "VARIANTS", {})
  if spec.variant not in variants:
    raise ValueError(f"model.variant: expected one of {sorted(variants)}, got "
                     f"{spec.variant!r}")
  base = variants[spec.variant]
  try:
    config = dataclasses.replace(base, **dict(spec.overrides))
  except TypeError as e:
    raise ValueError(f"model.overrides: {e}") from e
  return cls, config


def _split_pure(module: nnx.Module):
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  return graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(rest)


def _teacher(config: TrainConfig, model_config: Any):
  """Frozen MaskGIT VQGAN for stage 1: (graphdef, params, model_state) or None."""
  if config.recipe != "stage1":
    return None
  from jaxtok.tokenizers import maskgit_vqgan  # pylint: disable=g-import-not-at-top
  mg_cfg = dataclasses.replace(model_config.pixel_decoder,
                               codebook_size=model_config.pixel_codebook_size)
  if config.teacher == "random":  # Smoke tests only: no released weights offline.
    teacher = maskgit_vqgan.MaskGITVQGAN(mg_cfg, rngs=nnx.Rngs(config.seed + 1))
  elif config.teacher:
    from jaxtok.io import torch_pickle
    from jaxtok.tokenizers.convert import titok_mapping  # pylint: disable=g-import-not-at-top
    teacher = titok_mapping.maskgit_from_official(torch_pickle.read_checkpoint(config.teacher),
                                                  mg_cfg)
  else:
    raise ValueError("teacher: recipe 'stage1' needs the MaskGIT-VQGAN weights file "
                     "(maskgit-vqgan-imagenet-f16-256.bin), or 'random' for smoke tests")
  return _split_pure(teacher)


def _discriminator(config: TrainConfig):
  """(graphdef, params, state) of TiTok's GAN discriminator, or None when the GAN is off."""
  if config.loss.gan_weight <= 0 or config.recipe == "stage1":
    return None
  from jaxtok.nets import discriminator  # pylint: disable=g-import-not-at-top
  disc = discriminator.NLayerDiscriminator(rngs=nnx.Rngs(config.seed + 2))
  return _split_pure(disc)


def _perceptual(config: TrainConfig):
  """Frozen perceptual network as (graphdef, params, state), or None.

  `loss.perceptual`: "lpips:PATH[,PATH2]" (LPIPS weights the user provides) or
  "inception" / "inception:PATH" (offline distance on the FID Inception network).
  """
  spec = config.loss.perceptual
  if not spec or config.loss.perceptual_weight <= 0 or config.recipe == "stage1":
    return None
  from jaxtok.nets import perceptual  # pylint: disable=g-import-not-at-top
  kind, _, arg = spec.partition(":")
  if kind == "lpips":
    if not arg:
      raise ValueError(f"loss.perceptual: 'lpips:PATH' needs the weights file, got {spec!r}")
    net = perceptual.LPIPS.from_file(*arg.split(","))
  elif kind == "inception":
    net = perceptual.InceptionPerceptual(arg or None)
  else:
    raise ValueError(f"loss.perceptual: expected '', 'lpips:PATH' or 'inception[:PATH]', got "
                     f"{spec!r}")
  return _split_pure(net)


def losses_config(config: TrainConfig, has_perceptual: bool, has_disc: bool):
  """Our `LossConfig` -> the losses module's (perceptual/GAN weights 0 when those are off)."""
  from jaxtok.trainers import losses  # pylint: disable=g-import-not-at-top
  lc = config.loss
  out = losses.LossConfig(
      reconstruction_loss=lc.reconstruction, reconstruction_weight=lc.reconstruction_weight,
      perceptual_weight=lc.perceptual_weight if has_perceptual else 0.0,
      quantizer_weight=lc.quantizer_weight,
      discriminator_weight=lc.gan_weight if has_disc else 0.0,
      discriminator_start=lc.gan_start_step, lecam_regularization_weight=lc.lecam_weight,
      lecam_ema_decay=lc.lecam_ema_decay)
  out.validate()
  return out


def _apply_fn(graphdef, method: str | None = None):
  """`(frozen (params, state), *args) -> module(*args)` for a frozen network."""
  def apply(frozen, *args):
    module = nnx.merge(graphdef, frozen[0], frozen[1])
    return (getattr(module, method) if method else module)(*args)
  return apply


# ==========================================================================================
# The experiment: state, shardings and jitted functions (no loop; tests drive it directly).
# ==========================================================================================
class Experiment:
  """Everything built from a config: mesh, model graph, sharded state, jitted step/eval.

  Args:
    config: the run config.
    devices: devices of the mesh (default: all); tests use sub-meshes.
  """

  def __init__(self, config: TrainConfig, devices=None):
    if config.recipe not in state_lib.RECIPES:
      raise ValueError(f"recipe: expected one of {state_lib.RECIPES}, got {config.recipe!r}")
    if config.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {config.dtype!r}")
    self.config = config
    self.mesh = shd.make_mesh(config.mesh, devices)
    self.local_batch = shd.global_batch_size_check(config.batch_size, self.mesh)
    self.model_cls, self.model_config = model_class_and_config(config.model)
    size = getattr(self.model_config, "image_size", config.data.resolution)
    if size != config.data.resolution:
      raise ValueError(f"data.resolution: expected the model's image_size {size}, got "
                       f"{config.data.resolution}")
    abstract_model = nnx.eval_shape(lambda: self.model_cls(self.model_config,
                                                           rngs=nnx.Rngs(0)))
    self.graphdef, abs_params, _ = _split_pure(abstract_model)
    self.tx = state_lib.make_optimizer(config.optim, config.total_steps, abs_params)
    teacher = _teacher(config, self.model_config)
    perc = _perceptual(config)
    disc = _discriminator(config)
    self.disc_graphdef = disc[0] if disc else None
    self.disc_tx = (state_lib.make_disc_optimizer(config.optim, config.total_steps)
                    if disc else None)
    self._disc_init = disc
    self.parts = state_lib.StepParts(
        graphdef=self.graphdef, tx=self.tx, recipe=config.recipe,
        loss=losses_config(config, perc is not None, disc is not None),
        compute_dtype=jnp.dtype(config.dtype), ema_decay=config.optim.ema_decay,
        teacher_apply=_apply_fn(teacher[0], "encode") if teacher else None,
        perceptual_apply=_apply_fn(perc[0]) if perc else None,
        disc_apply=self._disc_apply() if disc else None, disc_tx=self.disc_tx)
    self.abstract_state = jax.eval_shape(self._init_state)
    self.state_shardings = shd.state_shardings(self.abstract_state, self.mesh,
                                               config.mesh.fsdp_min_size)
    self.batch_sharding = shd.batch_sharding(self.mesh)
    self.replicated = shd.replicated(self.mesh)
    self.key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    # Frozen networks: replicated, passed as (non-donated) arguments, not baked-in constants.
    frozen = {}
    if teacher:
      frozen["teacher"] = (teacher[1], teacher[2])
    if perc:
      frozen["perceptual"] = (perc[1], perc[2])
    self.frozen = jax.device_put(frozen, self.replicated)
    step_fn = state_lib.make_train_step(self.parts)
    self.jit_options = {}
    if config.fast_compile:
      self.jit_options = {"compiler_options": {"xla_backend_optimization_level": 0,
                                               "xla_llvm_disable_expensive_passes": True}}
    self.train_step = jax.jit(
        step_fn, in_shardings=(self.state_shardings, self.batch_sharding, self.replicated,
                               self.replicated),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=(0,),
        **self.jit_options)
    self._eval = jax.jit(self._reconstruct, out_shardings=self.replicated, **self.jit_options)

  # ---- pieces ----
  def _disc_apply(self):
    graphdef = self.disc_graphdef

    def apply(params, disc_state, images):
      disc = nnx.merge(graphdef, params, disc_state)
      logits = disc(images)
      return logits, nnx.to_pure_dict(nnx.state(disc, nnx.Not(nnx.Param)))
    return apply

  def _init_state(self) -> TrainState:
    model = self.model_cls(self.model_config, rngs=nnx.Rngs(self.config.seed))
    _, params, rest = _split_pure(model)
    disc_params = disc_state = disc_opt = {}
    if self._disc_init:
      disc = nnx.merge(self._disc_init[0], self._disc_init[1], self._disc_init[2])
      _, disc_params, disc_state = _split_pure(disc)
      disc_opt = self.disc_tx.init(disc_params)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=rest,
        opt_state=self.tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        disc_params=disc_params, disc_state=disc_state, disc_opt_state=disc_opt,
        lecam={"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)})

  def init_state(self) -> TrainState:
    """A freshly initialised, sharded state (identical on every process)."""
    return jax.jit(self._init_state, out_shardings=self.state_shardings, **self.jit_options)()

  def abstract_for_restore(self):
    return ckpt_lib.abstract_with_shardings(self.abstract_state, self.state_shardings)

  def global_batch(self, local_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This host's `{"image": uint8 [b, R, R, 3]}` -> global arrays over the mesh."""
    if local_batch["image"].shape[0] != self.local_batch:
      raise ValueError(f"local_batch: expected {self.local_batch} images on this host, got "
                       f"{local_batch['image'].shape[0]}")
    return shd.make_global(local_batch, self.batch_sharding)

  def step(self, state: TrainState, batch: dict[str, jax.Array]):
    return self.train_step(state, batch, self.key, self.frozen)

  # ---- evaluation ----
  def _reconstruct(self, params, model_state, images):
    model = nnx.merge(self.graphdef, params, model_state)
    recon, aux = model(images, train=False)
    return jnp.clip(recon.astype(jnp.float32), 0.0, 1.0), aux.get("ids")

  def reconstruct(self, state: TrainState, images_uint8: np.ndarray, *, ema: bool = True
                  ) -> np.ndarray:
    """Held-out reconstructions `[N, R, R, 3]` float32 in [0, 1] (EMA weights by default)."""
    images = jax.make_array_from_process_local_data(
        self.replicated, images_uint8.astype(np.float32) / 255.0)
    params = state.ema_params if ema else state.params
    recon, _ = self._eval(params, state.model_state, images)
    return np.asarray(recon.addressable_data(0))

  def export_model(self, state: TrainState, *, ema: bool = True) -> nnx.Module:
    """The tokenizer (an nnx module on host memory) with the EMA (or raw) weights."""
    params = state.ema_params if ema else state.params
    host = lambda t: jax.tree_util.tree_map(
        lambda x: np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True))
        if not x.is_fully_addressable else np.asarray(x), t)
    return nnx.merge(self.graphdef, host(params), host(state.model_state))

  def init_from(self, state: TrainState, path: str) -> TrainState:
    """Weights-only initialisation (params and EMA) from a jaxtok dir or an official file."""
    model = load_init_weights(path, self.model_config)
    _, params, _ = _split_pure(model)
    want = jax.tree_util.tree_structure(state.params)
    if jax.tree_util.tree_structure(params) != want:
      raise ValueError(f"init_from: parameter tree of {path!r} does not match the model "
                       f"{self.config.model.family}:{self.config.model.variant}")
    for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                         jax.tree_util.tree_leaves(state.params)):
      if a.shape != b.shape:
        raise ValueError(f"init_from: {state_lib.path_str(p)} has shape {a.shape} in "
                         f"{path!r}, expected {b.shape}")
    params = jax.device_put(params, self.state_shardings.params)
    ema = jax.device_put(params, self.state_shardings.ema_params)
    return state.replace(params=params, ema_params=ema,
                         opt_state=jax.jit(self.tx.init, out_shardings=(
                             self.state_shardings.opt_state))(params))


def load_init_weights(path: str, model_config: Any) -> nnx.Module:
  """A model from `path`: a `jaxtok.save` directory, or an official PyTorch checkpoint."""
  p = Path(path)
  if p.is_dir():
    import jaxtok  # pylint: disable=g-import-not-at-top
    return jaxtok.load(p).model
  if p.is_file():
    from jaxtok.io import torch_pickle
    from jaxtok.tokenizers.convert import titok_mapping  # pylint: disable=g-import-not-at-top
    return titok_mapping.titok_from_params(model_config, torch_pickle.read_checkpoint(p))
  raise ValueError(f"init_from: expected a jaxtok checkpoint directory or a checkpoint file, "
                   f"got {path!r}")


# ==========================================================================================
# Feedback: metrics files, TensorBoard, reconstruction grids, progress bar.
# ==========================================================================================
class MetricWriter:
  """`metrics.jsonl` + TensorBoard event files (tensorboardX: no TensorFlow needed)."""

  def __init__(self, workdir: Path, enabled: bool = True):
    self.enabled = enabled
    self.jsonl = None
    self.tb = None
    if enabled:
      self.jsonl = open(workdir / "metrics.jsonl", "a", encoding="utf-8")
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self.tb = SummaryWriter(str(workdir / "tensorboard"))
      except ImportError:  # pragma: no cover - tensorboardX is a dependency.
        _LOG.warning("tensorboardX missing: no TensorBoard event files")

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
    self.jsonl.write(json.dumps(row) + "\n")
    self.jsonl.flush()
    if self.tb is not None:
      for k, v in metrics.items():
        self.tb.add_scalar(k, float(v), int(step))

  def image(self, step: int, name: str, image: np.ndarray) -> None:
    if self.enabled and self.tb is not None:
      self.tb.add_image(name, image, int(step), dataformats="HWC")

  def close(self) -> None:
    if self.jsonl:
      self.jsonl.close()
    if self.tb is not None:
      self.tb.close()


def grid_image(originals: np.ndarray, recons: np.ndarray, pad: int = 2) -> np.ndarray:
  """Two rows: originals `[N, R, R, 3]` uint8 on top, reconstructions (float [0,1]) below."""
  n, r = originals.shape[0], originals.shape[1]
  rec = np.clip(np.round(recons * 255.0), 0, 255).astype(np.uint8)
  out = np.full((2 * r + 3 * pad, n * r + (n + 1) * pad, 3), 255, np.uint8)
  for i in range(n):
    x = pad + i * (r + pad)
    out[pad:pad + r, x:x + r] = originals[i]
    out[2 * pad + r:2 * pad + 2 * r, x:x + r] = rec[i]
  return out


def save_grid(workdir: Path, step: int, originals: np.ndarray, recons: np.ndarray) -> Path:
  """Writes `grids/step_XXXXXXX.png` and `recon_grid.png` (latest); returns the latter."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(grid_image(originals, recons))
  (workdir / "grids").mkdir(exist_ok=True)
  img.save(workdir / "grids" / f"step_{step:07d}.png")
  latest = workdir / "recon_grid.png"
  img.save(latest)
  return latest


def heldout_psnr(originals: np.ndarray, recons: np.ndarray) -> float:
  """Mean per-image PSNR (dB, peak 1.0) of reconstructions against uint8 originals."""
  ref = originals.astype(np.float64) / 255.0
  mse = np.mean((recons.astype(np.float64) - ref) ** 2, axis=(1, 2, 3))
  return float(np.mean(10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))))


def run_evaluators(config: TrainConfig, exp: Experiment, state: TrainState
                   ) -> dict[str, float]:
  """`{"eval/<evaluator>/<metric>": value}` of `config.evaluators` (jaxtok.eval) on the
  EMA weights, over `config.data.eval_source` (numeric metrics only)."""
  if not config.evaluators:
    return {}
  from jaxtok.api import Tokenizer  # pylint: disable=g-import-not-at-top
  from jaxtok.eval import common as eval_common  # pylint: disable=g-import-not-at-top
  from jaxtok import data as data_lib  # pylint: disable=g-import-not-at-top
  tok = Tokenizer(exp.export_model(state), family=_family_name(config))
  images = data_lib.eval_images(config.data.eval_source, config.data.resolution)
  evaluators = eval_common.build_evaluators(list(config.evaluators))
  results = eval_common.run_evaluators(evaluators, tok, images)
  return {f"eval/{k}": float(v) for k, v in results.items()
          if isinstance(v, (int, float, np.floating, np.integer))}


# ==========================================================================================
# The loop.
# ==========================================================================================
def _data_config(config: TrainConfig):
  from jaxtok import data as data_lib  # pylint: disable=g-import-not-at-top
  return data_lib.DataConfig(source=config.data.source, resolution=config.data.resolution,
                             crop_scale=(config.data.min_crop_scale, 1.0),
                             num_workers=config.data.num_workers, seed=config.seed)


def _restore(config, exp, ckpt, it, workdir):
  """Resume order: workdir checkpoint, config.resume, config.init_from, scratch."""
  restored = ckpt.restore_latest(exp.abstract_for_restore(), data_iterator=it)
  if restored is not None:
    return restored[1], f"resumed from {workdir / 'checkpoints' / str(restored[0])}"
  if config.resume:
    directory, step = ckpt_lib.find_checkpoint_dir(config.resume)
    other = ckpt_lib.Checkpointer(directory, read_only=True)
    if step is None:
      found = other.restore_latest(exp.abstract_for_restore(), data_iterator=it)
      if found is None:
        raise ValueError(f"resume: no loadable checkpoint in {str(directory)!r}")
      step, state = found
    else:
      state = other.restore(step, exp.abstract_for_restore(), data_iterator=it)
    return state, f"resumed from {directory / str(step)} (config.resume)"
  state = exp.init_state()
  if config.init_from:
    return exp.init_from(state, config.init_from), f"initialised from {config.init_from}"
  return state, "started from scratch"


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       devices=None) -> dict[str, Any]:
  """Trains `config` in `workdir` until `config.total_steps` (or preemption).

  Returns:
    A summary dict: `status` ("done" / "preempted"), `step`, `psnr_before`, `psnr_after`,
    `grid`, `export`, `origin`.

  Raises:
    NonFiniteLossError: a loss term became NaN/Inf (the last good checkpoint is on disk).
  """
  from jaxtok import data as data_lib  # pylint: disable=g-import-not-at-top
  workdir = Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  primary = distributed.is_primary()
  config_json = to_json(config)
  if primary:
    (workdir / "config.json").write_text(config_json)

  # ---- build ----
  exp = Experiment(config, devices)
  it = data_lib.create_train_iterator(_data_config(config), batch_size=exp.local_batch,
                                      seed=config.seed)
  eval_imgs = data_lib.eval_images(config.data.eval_source, config.data.resolution,
                                   max_images=config.data.num_eval_images)
  ckpt = ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINT_SUBDIR,
                               keep=config.keep_checkpoints,
                               async_save=config.async_checkpoints)
  state, origin = _restore(config, exp, ckpt, it, workdir)
  start = int(jax.device_get(state.step))
  if primary:
    print(f"[jaxtok] {origin} at step {start}; {state_lib.count_params(state.params):,} "
          f"params; mesh {dict(exp.mesh.shape)}; {config.total_steps} steps of "
          f"{config.batch_size} images", flush=True)
  writer = MetricWriter(workdir, enabled=primary)

  # Held-out PSNR of the untrained model, kept across restarts.
  before_file = workdir / "psnr_before.json"
  if before_file.exists():
    psnr_before = json.loads(before_file.read_text())["psnr"]
  else:
    psnr_before = heldout_psnr(eval_imgs, exp.reconstruct(state, eval_imgs))
    if primary:
      before_file.write_text(json.dumps({"step": start, "psnr": psnr_before}))
  if start == 0:
    writer.write(start, {"eval/heldout/psnr": psnr_before})

  # ---- loop ----
  stop = distributed.StopSignal()
  stop.install()
  bar = None
  if config.progress_bar and primary:
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    bar = tqdm(total=config.total_steps, initial=start, dynamic_ncols=True, desc="train")
  status, step, grid_path = "done", start, None
  lr_fn = state_lib.lr_schedule(config.optim, config.total_steps)
  t_last, n_last = time.perf_counter(), start
  try:
    for step in range(start + 1, config.total_steps + 1):
      batch = exp.global_batch(next(it))
      state, metrics = exp.step(state, batch)
      metrics = jax.device_get(metrics)
      bad = sorted(k for k, v in metrics.items() if not math.isfinite(float(v))
                   and k.startswith(("loss/", "train/grad_norm")))
      if bad:
        ckpt.wait()  # The last good checkpoint (if any) is complete on disk.
        good = ckpt.all_steps()
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {', '.join(f'{k}={metrics[k]}' for k in bad)}; "
            f"stopping. Last good checkpoint: "
            f"{(workdir / 'checkpoints' / str(good[-1])) if good else 'none'}")
      if bar is not None:
        bar.update(1)
        bar.set_postfix({k.split("/")[-1]: f"{float(v):.4g}" for k, v in metrics.items()
                         if k in ("loss/total_loss", "loss/reconstruction_loss",
                                  "train/psnr", "codebook/usage", "codebook/perplexity")})
      if step % config.log_every == 0 or step == config.total_steps:
        now = time.perf_counter()
        metrics["train/steps_per_sec"] = (step - n_last) / max(now - t_last, 1e-9)
        metrics["train/lr"] = float(lr_fn(step - 1))
        metrics.update({f"data/{k}": v for k, v in it.stats.items()})
        t_last, n_last = now, step
        writer.write(step, metrics)
      if config.grid_every and step % config.grid_every == 0 and primary:
        recon = exp.reconstruct(state, eval_imgs)
        grid_path = save_grid(workdir, step, eval_imgs, recon)
        writer.image(step, "heldout/recon_grid", grid_image(eval_imgs, recon))
        writer.write(step, {"eval/heldout/psnr": heldout_psnr(eval_imgs, recon)})
      if config.eval_every and step % config.eval_every == 0:
        writer.write(step, run_evaluators(config, exp, state))
      preempt = distributed.sync_flag(stop.signum is not None) or ckpt.reached_preemption(step)
      if step % config.checkpoint_every == 0 or step == config.total_steps or preempt:
        ckpt.save(step, state, data_iterator=it, config_json=config_json, force=preempt)
      if preempt:
        ckpt.wait()
        status = "preempted"
        _LOG.warning("signal %s: saved checkpoint %d and stopping", stop.signum, step)
        break
    ckpt.wait()
  finally:
    stop.uninstall()
    if bar is not None:
      bar.close()
    ckpt.close()

  summary = {"status": status, "step": int(step), "origin": origin,
             "psnr_before": psnr_before, "workdir": str(workdir),
             "skipped_records": it.stats.get("skipped", 0)}
  if status == "done":
    recon = exp.reconstruct(state, eval_imgs)
    summary["psnr_after"] = heldout_psnr(eval_imgs, recon)
    if primary:
      grid_path = save_grid(workdir, step, eval_imgs, recon)
    summary["grid"] = str(grid_path) if grid_path else None
    writer.write(step, {"eval/heldout/psnr": summary["psnr_after"]})
    if config.evaluators:
      writer.write(step, run_evaluators(config, exp, state))
    if config.export:
      model = exp.export_model(state)
      if primary:
        import jaxtok  # pylint: disable=g-import-not-at-top
        summary["export"] = str(jaxtok.save(model, workdir / "export",
                                            family=_family_name(config)))
  writer.close()
  if primary:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def _family_name(config: TrainConfig) -> str | None:
  return None if ":" in config.model.family else config.model.family


def print_summary(summary: dict[str, Any]) -> None:
  lines = [f"[jaxtok] {summary['status']} at step {summary['step']} ({summary['origin']})"]
  if "psnr_after" in summary:
    lines.append(f"[jaxtok] held-out PSNR before training: {summary['psnr_before']:.2f} dB; "
                 f"after: {summary['psnr_after']:.2f} dB "
                 f"({summary['psnr_after'] - summary['psnr_before']:+.2f} dB)")
  if summary.get("grid"):
    lines.append(f"[jaxtok] reconstruction grid (top: held-out originals, bottom: "
                 f"reconstructions): {summary['grid']}")
  if summary.get("export"):
    lines.append(f"[jaxtok] EMA weights exported to {summary['export']} "
                 f"(jaxtok.load(...))")
  print("\n".join(lines), flush=True)


# ==========================================================================================
# Command line.
# ==========================================================================================
def main(argv=None) -> None:
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  cfg_flag = config_flags.DEFINE_config_file(
      "config", None, "Config file: path/to/config.py[:arg]", lock_config=False)
  workdir_flag = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs).")
  coord = flags.DEFINE_string("coordinator", None, "Multi-process: host:port of process 0.")
  nproc = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
  pid = flags.DEFINE_integer("process_id", None, "Multi-process: index of this process.")
  flags.mark_flags_as_required(["config", "workdir"])

  def _main(_):
    from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO.
    distributed.initialize(coord.value, nproc.value, pid.value)
    try:
      summary = train_and_evaluate(cfg_flag.value, workdir_flag.value)
    except NonFiniteLossError as e:
      print(f"[jaxtok] {e}", file=sys.stderr, flush=True)
      sys.exit(3)
    if distributed.is_primary():
      print_summary(summary)

  app.run(_main, argv=argv)


def run() -> None:
  """Console entry point (`jaxtok-train`)."""
  main(sys.argv)


if __name__ == "__main__":
  run()
