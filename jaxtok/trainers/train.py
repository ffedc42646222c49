r"""The jaxtok trainer: one sharded training loop for every tokenizer (docs/design.md §5).

  python -m jaxtok.trainers.train --config jaxtok/configs/titok.py:tiny --workdir runs/tiny \
      [--config.total_steps=100 --config.optim.lr=3e-4 --config.model.codebook_size=2048 ...]

The same command runs on a laptop CPU, a GPU and every worker of a TPU pod (multi-process
settings: see `jaxtok.parallel.distributed`, or the --coordinator/--num_processes/--process_id
flags). The run is resumed automatically from the newest good checkpoint in `--workdir`,
then `config.resume`, then `config.init_from` (weights only), else starts from scratch.

Outputs in the workdir: `checkpoints/<step>/` (Orbax), `metrics.jsonl`, TensorBoard event
files in `tensorboard/`, reconstruction grids in `grids/` (`recon_grid.png` = latest: top
row held-out originals, bottom row reconstructions), and `export/` (the final EMA weights,
loadable with `jaxtok.load`).
"""
from __future__ import annotations

import dataclasses
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
from absl import app, flags
from absl import logging as absl_logging
from flax import nnx
from ml_collections import config_flags

import jaxtok
from jaxtok import data as data_lib
from jaxtok import hub, parallel
from jaxtok import metrics as recon_lib
from jaxtok.api import Tokenizer
from jaxtok.eval import evaluators as evaluators_lib
from jaxtok.io import checkpoint as checkpoint_format
from jaxtok.tokenizers import get_family
from jaxtok.tokenizers.convert import load_official
from jaxtok.trainers import checkpoint as ckpt_lib
from jaxtok.trainers import feedback, losses
from jaxtok.trainers import frozen as frozen_lib
from jaxtok.trainers import state as state_lib
from jaxtok.trainers import step as step_lib
from jaxtok.trainers.config import TrainConfig, to_json
from jaxtok.trainers.state import TrainState

_LOG = logging.getLogger("jaxtok.train")


class NonFiniteLossError(FloatingPointError):
  """A loss term became NaN/Inf; the message names the step and the offending terms."""


# ==========================================================================================
# Model construction and host transfer.
# ==========================================================================================
def model_class_and_config(config: TrainConfig) -> tuple[type, Any]:
  """(model class, validated model config) of `config.family` / `config.model`.

  The config is rebuilt through its `from_dict`, so fields changed after construction
  (command-line overrides) are normalised and validated like a fresh config.
  """
  family = get_family(config.family)
  if not isinstance(config.model, family.config_class):
    raise ValueError(f"model: family {config.family!r} takes a "
                     f"{family.config_class.__name__}, got {type(config.model).__name__}")
  return family.model_class, family.config_class.from_dict(config.model.to_dict())


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
    if config.recipe not in step_lib.RECIPES:
      raise ValueError(f"recipe: expected one of {step_lib.RECIPES}, got {config.recipe!r}")
    if config.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"dtype: expected 'float32' or 'bfloat16', got {config.dtype!r}")
    for name in ("log_every", "checkpoint_every", "eval_every", "grid_every"):
      period = getattr(config, name)
      if not isinstance(period, int) or period < 0:
        raise ValueError(f"{name}: expected a step period >= 0 (0 = off), got {period!r}")
    self._init_model = None  # The `init_from` model, loaded once (see `init_from`).
    if config.model_from_init:
      if not config.init_from:
        raise ValueError("model_from_init: expected config.init_from (the checkpoint whose "
                         "model the run trains), got ''")
      self._init_model = load_init_weights(config.init_from, None, config.family,
                                           config.init_options)
      config = dataclasses.replace(config, model=self._init_model.config)
    self.config = config
    self.mesh = parallel.make_mesh(config.mesh, devices)
    self.local_batch = parallel.global_batch_size_check(config.batch_size, self.mesh)
    self.model_cls, self.model_config = model_class_and_config(config)
    size = self.model_config.image_size
    if config.data.resolution not in (None, size):
      raise ValueError(f"data.resolution: expected None (it follows model.image_size) or "
                       f"{size}, got {config.data.resolution}")
    self.data_config = dataclasses.replace(config.data, resolution=size)
    self.data_config.validate()
    abstract_model = nnx.eval_shape(lambda: self.model_cls(self.model_config,
                                                           rngs=nnx.Rngs(0)))
    self.token_spec = abstract_model.token_spec
    self.graphdef, abs_params, _ = state_lib.split_pure(abstract_model)
    self.tx = state_lib.make_optimizer(config.optim, config.total_steps, abs_params)
    teacher = frozen_lib.teacher_network(config, self.model_config)
    perc = frozen_lib.perceptual_network(config)
    disc = frozen_lib.discriminator_network(config)
    semantic = frozen_lib.semantic_networks(config, self.model_config)
    repa = frozen_lib.repa_network(config, self.model_config)
    semantic_groups = 1
    if semantic and config.loss.semantic_negatives == "device":
      semantic_groups = self.mesh.size
      if config.batch_size // semantic_groups < 2:
        raise ValueError(f"loss.semantic_negatives: 'device' needs >= 2 images per device "
                         f"(InfoNCE negatives), got batch_size {config.batch_size} over "
                         f"{semantic_groups} devices")
    self.disc_tx = (state_lib.make_disc_optimizer(config.optim, config.total_steps)
                    if disc else None)
    self._disc_init = disc
    self.parts = step_lib.StepParts(
        graphdef=self.graphdef, tx=self.tx, recipe=config.recipe,
        loss=step_lib.step_loss_config(config, perc is not None, disc is not None),
        compute_dtype=jnp.dtype(config.dtype), ema_decay=config.optim.ema_decay,
        teacher_apply=frozen_lib.frozen_apply(teacher.graphdef, "encode") if teacher else None,
        perceptual_apply=frozen_lib.frozen_apply(perc.graphdef) if perc else None,
        disc_apply=frozen_lib.disc_apply(disc.graphdef) if disc else None, disc_tx=self.disc_tx,
        semantic_apply=(tuple((b, frozen_lib.frozen_apply(net.graphdef))
                              for b, net in semantic.items())
                        if semantic else None),
        semantic_groups=semantic_groups,
        repa_apply=frozen_lib.frozen_apply(repa.graphdef) if repa else None)
    self.abstract_state = jax.eval_shape(self._init_state)
    self.state_shardings = parallel.state_shardings(self.abstract_state, self.mesh,
                                                    config.mesh.fsdp_min_size)
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    self.replicated = parallel.replicated(self.mesh)
    self.key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)
    # Frozen networks: replicated, passed as (non-donated) arguments, not baked-in constants.
    frozen = {name: net.variables for name, net in (("teacher", teacher),
                                                        ("perceptual", perc), ("repa", repa))
              if net}
    if semantic:  # FQGAN's semantic teachers, one entry per branch.
      frozen["semantic"] = {b: net.variables for b, net in semantic.items()}
    if parallel.compile_only(self.mesh):
      # Deviceless (a TPU topology described on this host, `jaxtok.trainers.plan`): the
      # frozen networks enter the step as shapes; only lowering and compiling can use them.
      self.frozen = jax.tree_util.tree_map(
          lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=self.replicated),
          frozen)
    else:
      self.frozen = jax.device_put(frozen, self.replicated)
    self.jit_options = {}
    if config.fast_compile:
      self.jit_options = {"compiler_options": {"xla_backend_optimization_level": 0,
                                               "xla_llvm_disable_expensive_passes": True}}
    # Traced for the mesh's platform: "auto" kernels follow the devices compiled for, not
    # the host's default backend (`jaxtok.platform`).
    self.train_step = jax.jit(
        parallel.on_platform(step_lib.make_train_step(self.parts), self.mesh),
        in_shardings=(self.state_shardings, self.batch_sharding, self.replicated,
                      self.replicated),
        out_shardings=(self.state_shardings, self.replicated), donate_argnums=(0,),
        **self.jit_options)
    self._eval = jax.jit(parallel.on_platform(self._reconstruct, self.mesh),
                         out_shardings=self.replicated, **self.jit_options)

  def _init_state(self) -> TrainState:
    model = self.model_cls(self.model_config, rngs=nnx.Rngs(self.config.seed))
    _, params, rest = state_lib.split_pure(model)
    gan = None
    if self._disc_init:  # Merge and split again: inside jit the arrays are fresh copies.
      _, dparams, dstate = state_lib.split_pure(nnx.merge(*self._disc_init))
      gan = state_lib.GanState(params=dparams, state=dstate,
                               opt_state=self.disc_tx.init(dparams),
                               lecam={"real": jnp.zeros((), jnp.float32),
                                      "fake": jnp.zeros((), jnp.float32)})
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params, model_state=rest,
        opt_state=self.tx.init(params),
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        gan=gan)

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
    return data_lib.to_global_batch(local_batch, self.batch_sharding)

  def step(self, state: TrainState, batch: dict[str, jax.Array]):
    return self.train_step(state, batch, self.key, self.frozen)

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
    host = lambda tree: jax.tree_util.tree_map(checkpoint_format.host_array, tree)
    return nnx.merge(self.graphdef, host(params), host(state.model_state))

  def init_from(self, state: TrainState, path: str) -> TrainState:
    """Weights-only initialisation: params, their EMA and the model's other variables
    (codebook statistics) from `load_init_weights(path)`; a fresh optimizer state."""
    if self._init_model is not None and path == self.config.init_from:
      model, self._init_model = self._init_model, None  # Used once: not held for the run.
    else:
      model = load_init_weights(path, self.model_config, self.config.family,
                                self.config.init_options)
    # On the host: the step donates the state's buffers, which must be its own.
    _, params, rest = jax.device_get(state_lib.split_pure(model))
    if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(state.params):
      raise ValueError(f"init_from: parameter tree of {path!r} does not match the "
                       f"{self.config.family} model of this config")
    for (p, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                         jax.tree_util.tree_leaves(state.params)):
      if a.shape != b.shape:
        raise ValueError(f"init_from: {state_lib.path_str(p)} has shape {a.shape} in "
                         f"{path!r}, expected {b.shape}")
    ema = jax.device_put(params, self.state_shardings.ema_params)  # From the host copy: two
    params = jax.device_put(params, self.state_shardings.params)  # buffers, not one aliased.
    model_state = state.model_state
    same = lambda a, b: (jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
                         and all(x.shape == y.shape for x, y in zip(
                             jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))))
    if same(rest, model_state):  # Else (another RNG layout) the fresh init's are kept.
      model_state = jax.device_put(rest, self.state_shardings.model_state)
    return state.replace(params=params, ema_params=ema, model_state=model_state,
                         opt_state=jax.jit(self.tx.init, out_shardings=(
                             self.state_shardings.opt_state))(params))


def load_init_weights(path: str, model_config: Any, family: str, options: str = ""
                      ) -> nnx.Module:
  """A model from `path`: a `jaxtok.save` directory, released weights by name (`hf:...`) or
  an official checkpoint file of `family`.

  Args:
    path: the checkpoint (`TrainConfig.init_from`).
    model_config: the run's model config: an official file's weights go into exactly this
      model (its dropout, resolution settings); None = the file's own config.
    family: the run's family; a checkpoint of another family is an error.
    options: JSON object of the converter's options (`TrainConfig.init_options`).
  """
  try:
    opts = json.loads(options) if options else {}
  except json.JSONDecodeError as e:
    raise ValueError(f"init_options: expected a JSON object, got {options!r} ({e})") from e
  if not isinstance(opts, dict):
    raise ValueError(f"init_options: expected a JSON object, got {options!r}")
  if hub.is_hub_name(path):
    model = jaxtok.load(path, family=family, **opts).model
  elif Path(path).is_dir() and (Path(path) / checkpoint_format.WEIGHTS_FILE).is_file():
    if opts:
      raise ValueError(f"init_options: a jaxtok checkpoint directory takes none, got {opts}")
    tok = jaxtok.load(path)
    if tok.family != family:
      raise ValueError(f"init_from: {path!r} holds a {tok.family} model, the run trains "
                       f"{family!r}")
    model = tok.model
  elif Path(path).exists():  # An official release of the run's family, through its converter.
    model = load_official(family, path, into=None if opts else model_config, **opts)
  else:
    raise ValueError(f"init_from: expected a jaxtok checkpoint directory, an 'hf:' name or "
                     f"an official checkpoint file, got {path!r}")
  return model


# ==========================================================================================
# Evaluation.
# ==========================================================================================
def heldout_psnr(originals: np.ndarray, recons: np.ndarray) -> float:
  """Mean per-image PSNR (dB) of reconstructions in [0, 1] against uint8 originals."""
  return float(np.mean(np.asarray(recon_lib.psnr(originals, recons))))


def run_evaluators(exp: Experiment, state: TrainState) -> dict[str, float]:
  """`{"eval/<evaluator>/<metric>": value}` of `config.evaluators` (jaxtok.eval) on the
  EMA weights, over `config.data.eval_source` (numeric metrics only)."""
  config, data = exp.config, exp.data_config
  if not config.evaluators:
    return {}
  tok = Tokenizer(exp.export_model(state), family=config.family)
  images = data_lib.eval_images(data.eval_source, data.resolution,
                                tfds_data_dir=data.tfds_data_dir, image_key=data.image_key)
  evaluators = evaluators_lib.build_evaluators(list(config.evaluators))
  results = evaluators_lib.run_evaluators(evaluators, tok, images)
  return {f"eval/{k}": float(v) for k, v in results.items()
          if isinstance(v, (int, float, np.floating, np.integer))}


# ==========================================================================================
# Resume.
# ==========================================================================================
def _restore(config: TrainConfig, exp: Experiment, ckpt, it, workdir: Path):
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


def _psnr_before(exp: Experiment, state: TrainState, eval_imgs: np.ndarray, workdir: Path,
                 start: int) -> float:
  """Held-out PSNR of the untrained model, kept across restarts in `psnr_before.json`."""
  before_file = workdir / "psnr_before.json"
  if before_file.exists():
    return json.loads(before_file.read_text())["psnr"]
  psnr = heldout_psnr(eval_imgs, exp.reconstruct(state, eval_imgs))
  if parallel.is_primary():
    before_file.write_text(json.dumps({"step": start, "psnr": psnr}))
  return psnr


# ==========================================================================================
# The loop.
# ==========================================================================================
def _token_figures(spec) -> dict[str, Any]:
  """Tokens per image and, for discrete ids, bits per token and fixed-length bytes per image."""
  out: dict[str, Any] = {"tokens_per_image": spec.num_tokens}
  if spec.vocab_size is not None:
    bits = spec.ids_per_token * math.log2(spec.vocab_size)
    out.update(bits_per_token=bits, bytes_per_image=spec.num_tokens * bits / 8)
  return out


def _prefix_curve(model, family: str, eval_imgs: np.ndarray, workdir: Path) -> dict[str, Any]:
  """Ordered tokenizers: held-out PSNR of each prefix 1, 2, 4, ..., K (the exported model,
  through the public API) and the prefix grid."""
  tok = jaxtok.Tokenizer(model, family=family)
  ids = tok.encode(eval_imgs)
  recons = {k: np.asarray(tok.decode(ids[:, :k]))
            for k in feedback.prefix_lengths(tok.num_tokens)}
  return {"prefix_psnr": {k: heldout_psnr(eval_imgs, r) for k, r in recons.items()},
          "prefix_grid": str(feedback.save_prefix_grid(workdir, eval_imgs, recons))}


def _every(step: int, period: int) -> bool:
  """Whether a `*_every` period (0 = off) falls on `step`."""
  return period > 0 and step % period == 0


def _check_finite(metrics: dict[str, Any], step: int, ckpt, workdir: Path) -> None:
  watched = {k: v for k, v in metrics.items() if k.startswith(("loss/", "train/grad_norm"))}
  bad = sorted(losses.nonfinite_terms(watched))
  if bad:
    ckpt.wait()  # The last good checkpoint (if any) is complete on disk.
    good = ckpt.all_steps()
    raise NonFiniteLossError(
        f"non-finite loss at step {step}: {', '.join(f'{k}={metrics[k]}' for k in bad)}; "
        f"stopping. Last good checkpoint: "
        f"{(workdir / 'checkpoints' / str(good[-1])) if good else 'none'}")


def _loop(exp: Experiment, state: TrainState, it, ckpt, writer: feedback.MetricWriter,
          eval_imgs: np.ndarray, workdir: Path, start: int, config_json: str,
          psnr_before: float):
  """Steps `start + 1 .. total_steps` (or until preemption): (status, step, state, grid)."""
  config, primary = exp.config, parallel.is_primary()
  stop = parallel.StopSignal()
  stop.install()
  bar = feedback.ProgressBar(config.total_steps, start, config.progress_bar and primary,
                             batch_size=config.batch_size)
  bar.set_heldout_psnr(psnr_before)
  status, step, grid_path = "done", start, None
  lr_fn = state_lib.lr_schedule(config.optim, config.total_steps)
  t_last, n_last = time.perf_counter(), start
  try:
    for step in range(start + 1, config.total_steps + 1):
      state, metrics = exp.step(state, exp.global_batch(next(it)))
      metrics = jax.device_get(metrics)
      _check_finite(metrics, step, ckpt, workdir)
      bar.update(metrics)
      if _every(step, config.log_every) or step == config.total_steps:
        now = time.perf_counter()
        metrics["train/steps_per_sec"] = (step - n_last) / max(now - t_last, 1e-9)
        metrics["train/lr"] = float(lr_fn(step - 1))
        metrics.update({f"data/{k}": v for k, v in it.stats.items()})
        t_last, n_last = now, step
        writer.write(step, metrics)
      if _every(step, config.grid_every) and primary:
        recon = exp.reconstruct(state, eval_imgs)
        grid_path = feedback.save_grid(workdir, step, eval_imgs, recon)
        writer.image(step, "heldout/recon_grid", feedback.grid_image(eval_imgs, recon))
        psnr = heldout_psnr(eval_imgs, recon)
        bar.set_heldout_psnr(psnr)
        writer.write(step, {"eval/heldout/psnr": psnr})
      if _every(step, config.eval_every):
        writer.write(step, run_evaluators(exp, state))
      preempt = parallel.sync_flag(stop.signum is not None) or ckpt.reached_preemption(step)
      if _every(step, config.checkpoint_every) or step == config.total_steps or preempt:
        ckpt.save(step, state, data_iterator=it, config_json=config_json, force=preempt)
      if preempt:
        ckpt.wait()
        status = "preempted"
        _LOG.warning("signal %s: saved checkpoint %d and stopping", stop.signum, step)
        break
    ckpt.wait()
  finally:
    stop.uninstall()
    bar.close()
    ckpt.close()
  return status, step, state, grid_path


def train_and_evaluate(config: TrainConfig, workdir: str | os.PathLike, *,
                       devices=None) -> dict[str, Any]:
  """Trains `config` in `workdir` until `config.total_steps` (or preemption).

  Returns:
    A summary dict: `status` ("done" / "preempted"), `step`, `psnr_before`, `psnr_after`,
    `grid`, `export`, `origin`, and `evaluators` (the final `run_evaluators` figures,
    `{"eval/<evaluator>/<metric>": value}`) when `config.evaluators` is set.

  Raises:
    NonFiniteLossError: a loss term became NaN/Inf (the last good checkpoint is on disk).
  """
  workdir = Path(workdir).absolute()
  workdir.mkdir(parents=True, exist_ok=True)
  primary = parallel.is_primary()
  # ---- build ----
  exp = Experiment(config, devices)
  config = exp.config  # With `model_from_init`, the released model's config.
  config_json = to_json(config)
  if primary:
    (workdir / "config.json").write_text(config_json)
  it = data_lib.create_train_iterator(exp.data_config, batch_size=exp.local_batch)
  data = exp.data_config
  eval_imgs = data_lib.eval_images(data.eval_source, data.resolution,
                                   max_images=data.num_eval_images,
                                   tfds_data_dir=data.tfds_data_dir, image_key=data.image_key)
  ckpt = ckpt_lib.Checkpointer(workdir / ckpt_lib.CHECKPOINT_SUBDIR,
                               keep=config.keep_checkpoints,
                               async_save=config.async_checkpoints)
  state, origin = _restore(config, exp, ckpt, it, workdir)
  start = int(jax.device_get(state.step))
  if primary:
    print(f"[jaxtok] {origin} at step {start}; {state_lib.count_params(state.params):,} "
          f"params; mesh {dict(exp.mesh.shape)}; {config.total_steps} steps of "
          f"{config.batch_size} images", flush=True)
  writer = feedback.MetricWriter(workdir, enabled=primary)
  psnr_before = _psnr_before(exp, state, eval_imgs, workdir, start)
  if start == 0:
    writer.write(start, {"eval/heldout/psnr": psnr_before})

  # ---- train ----
  t0 = time.perf_counter()
  status, step, state, grid_path = _loop(exp, state, it, ckpt, writer, eval_imgs, workdir,
                                         start, config_json, psnr_before)
  seconds = time.perf_counter() - t0

  # ---- final evaluation and export ----
  summary = {"status": status, "step": int(step), "origin": origin,
             "psnr_before": psnr_before, "workdir": str(workdir),
             "skipped_records": it.stats.get("skipped", 0),
             "train_seconds": seconds,
             "images_per_sec": (int(step) - start) * config.batch_size / max(seconds, 1e-9)}
  summary.update(_token_figures(exp.token_spec))
  if status == "done":
    recon = exp.reconstruct(state, eval_imgs)
    summary["psnr_after"] = heldout_psnr(eval_imgs, recon)
    if primary:
      grid_path = feedback.save_grid(workdir, step, eval_imgs, recon)
    summary["grid"] = str(grid_path) if grid_path else None
    writer.write(step, {"eval/heldout/psnr": summary["psnr_after"]})
    results = run_evaluators(exp, state)
    writer.write(step, results)
    if results:
      summary["evaluators"] = results
    if config.export:
      model = exp.export_model(state)
      if primary:
        summary["export"] = str(jaxtok.save(model, workdir / "export", family=config.family))
        if exp.token_spec.prefix:
          summary.update(_prefix_curve(model, config.family, eval_imgs, workdir))
  writer.close()
  if primary:
    (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


# ==========================================================================================
# Command line.
# ==========================================================================================
def main(argv=None) -> None:
  cfg_flag = config_flags.DEFINE_config_file(
      "config", None, "Config file: path/to/config.py[:arg]", lock_config=False)
  workdir_flag = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs).")
  coord = flags.DEFINE_string("coordinator", None, "Multi-process: host:port of process 0.")
  nproc = flags.DEFINE_integer("num_processes", None, "Multi-process: number of processes.")
  pid = flags.DEFINE_integer("process_id", None, "Multi-process: index of this process.")
  flags.mark_flags_as_required(["config", "workdir"])

  def _main(_):
    absl_logging.set_verbosity(absl_logging.WARNING)  # Orbax logs every save at INFO.
    parallel.initialize(coord.value, nproc.value, pid.value)
    try:
      summary = train_and_evaluate(cfg_flag.value, workdir_flag.value)
    except NonFiniteLossError as e:
      print(f"[jaxtok] {e}", file=sys.stderr, flush=True)
      sys.exit(3)
    if parallel.is_primary():
      feedback.print_summary(summary)

  app.run(_main, argv=argv)


def run() -> None:
  """Console entry point (`jaxtok-train`)."""
  main(sys.argv)


if __name__ == "__main__":
  run()
