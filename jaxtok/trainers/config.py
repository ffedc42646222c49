r"""The experiment config of the trainer: typed dataclasses owning their fields (docs/design.md §6).

A config file under `jaxtok/configs/` is a Python module with `get_config(arg) -> TrainConfig`,
loaded by `ml_collections.config_flags.DEFINE_config_file`, which overrides any (nested) field
from the command line with the type of its annotation:

  python -m jaxtok.trainers.train --config jaxtok/configs/titok.py:variant=S-128,smoke \
      --workdir /tmp/run --config.optim.lr=2e-4 --config.model.codebook_size=2048 \
      --config.loss.gan_weight=0.1 --config.data.source=folder:/images

Each part is owned by the module that consumes it: `TrainConfig.loss` is
`jaxtok.trainers.losses.LossConfig`, `TrainConfig.data` is `jaxtok.data.DataConfig`,
`TrainConfig.mesh` is `jaxtok.parallel.MeshConfig`, and
`TrainConfig.model` is the model family's own config dataclass (`TiTokConfig` for "titok" and
"one_d_piece"), filled by the config file from `jaxtok.tokenizers.get_family(f).variant(v)`.
The model's `image_size` is the one source of truth for the image resolution.

No module of this file's imports may use `from __future__ import annotations` for a config
dataclass: config_flags reads each field's annotation at runtime (`dataclasses.fields(x).type`)
and cannot parse a string annotation.
"""
# No `from __future__ import annotations`: config_flags reads the field types at runtime.
import dataclasses
import functools
import json
import operator
from typing import Any

from jaxtok.data import DataConfig
from jaxtok.parallel import MeshConfig
from jaxtok.tokenizers import TOKENIZERS
from jaxtok.trainers.losses import LossConfig

# The config classes of the registered families (`jaxtok.tokenizers.TOKENIZERS`), read from
# the registry: a new family needs no line here. config_flags
# never parses this annotation for `--config.model.<field>=...`: it takes the field's type
# from the class of the *instance* held in `config.model` (its own dataclass fields), so a
# union is as overridable as a single class, nested and optional fields included
# (`--config.model.pixel_decoder.z_channels=64`, `--config.model.init_std=0.01`). Only
# replacing the whole model from the command line (`--config.model=...`) is unsupported.
ModelConfig = functools.reduce(operator.or_, dict.fromkeys(
    f.config_class for f in TOKENIZERS.values()))


@dataclasses.dataclass(kw_only=True)
class OptimConfig:
  """AdamW + linear warmup + cosine decay, clipping and weight EMA.

  TiTok (arXiv 2406.07550, App. A / official configs): lr 1e-4, betas (0.9, 0.99),
  weight decay 1e-4, 10k warmup steps, cosine to 1e-5, grad-norm clip 1.0, EMA 0.999.
  """
  lr: float = 1e-4
  end_lr: float = 1e-5
  warmup_steps: int = 10_000
  b1: float = 0.9
  b2: float = 0.99
  eps: float = 1e-8
  weight_decay: float = 1e-4
  # Parameters whose '/'-joined path matches one of these regexes get no weight decay
  # (norms, biases, embeddings, positional tables, codebooks); 1-D params never decay.
  no_decay: tuple[str, ...] = (
      r"(^|/)(bias|scale)$", r"norm", r"(^|/)ln", r"embed", r"token", r"codebook",
      r"class_emb", r"positional", r"mask_token")
  # Parameters matching any of these regexes are frozen (no update, no EMA drift).
  frozen: tuple[str, ...] = ()
  grad_clip: float = 1.0
  ema_decay: float = 0.999
  # Discriminator (GAN) optimizer: its own AdamW, constant lr after warmup.
  disc_lr: float = 1e-4
  disc_weight_decay: float = 1e-4


@dataclasses.dataclass(kw_only=True)
class TrainConfig:
  """One training run.

  Attributes:
    family: key of `jaxtok.tokenizers.TOKENIZERS` ("titok", "one_d_piece", "flextok",
      "fqgan").
    log_every / checkpoint_every / eval_every / grid_every: period in steps; 0 = off (the
      last step still logs and checkpoints, and a preemption still checkpoints).
    model: that family's config dataclass (`get_family(family).variant(name)`, then typed
      field changes); its `image_size` sets the data resolution.
    data / optim / loss / mesh: see their classes.
    recipe: "single" (single-stage pixel reconstruction), "stage1" (proxy-code CE
      against a frozen MaskGIT VQGAN, arXiv 2406.07550 §3.3) or "stage2" (decoder
      fine-tuning with encoder and quantizer frozen).
    teacher: path of MaskGIT-VQGAN weights for stage 1 ("random" = random init, smoke
      tests only; "" = none).
    seed: model initialisation (the data stream has `data.seed`).
    resume: checkpoint directory (a workdir or one of its step dirs) to resume from when
      the workdir has no checkpoint of its own.
    init_from: weights-only initialisation (used only when nothing can be resumed): a
      `jaxtok.load`-able directory, released weights by name (`hf:ORG/NAME[/FILE]`,
      `jaxtok.hub`), or an official checkpoint file of `family`, read by its converter.
    init_options: JSON object of the converter's options for `init_from` (`hf:` names and
      official files), e.g. '{"vae_scaling_factor": 0.18}' or '{"heads": {...}}'.
    model_from_init: take `model` from `init_from` (the fine-tune recipes): the run trains
      the released architecture as it is, whatever `model` said.
    dtype: "float32" or "bfloat16" (mixed precision; params, optimizer and losses stay
      float32).
    fast_compile: XLA's cheap backend settings (opt level 0): ~2-3x faster compiles, slower
      steps. For smoke runs and tests, never for real training.
  """
  name: str = "run"
  family: str = "titok"
  model: ModelConfig = dataclasses.field(default_factory=TOKENIZERS["titok"].config_class)
  data: DataConfig = dataclasses.field(default_factory=DataConfig)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)
  recipe: str = "single"
  teacher: str = ""
  seed: int = 0
  total_steps: int = 1000
  batch_size: int = 32
  dtype: str = "float32"
  log_every: int = 50
  checkpoint_every: int = 1000
  keep_checkpoints: int = 3
  async_checkpoints: bool = True
  eval_every: int = 0
  grid_every: int = 0
  evaluators: tuple[str, ...] = ()
  resume: str = ""
  init_from: str = ""
  init_options: str = ""
  model_from_init: bool = False
  export: bool = True
  progress_bar: bool = True
  fast_compile: bool = False


def parse_arg(arg: str | None, **spec: Any) -> dict[str, Any]:
  """Parses "variant=S-128,smoke" into typed values, big_vision style.

  Args:
    arg: comma-separated `key=value` or bare `key` (a bare key means True).
    **spec: key -> default value; the default's type converts the text.

  Returns:
    dict with every key of `spec`.

  Raises:
    ValueError: on an unknown key or an unparsable value.
  """
  out = dict(spec)
  if not arg:
    return out
  for item in arg.split(","):
    item = item.strip()
    if not item:
      continue
    key, has_value, value = item.partition("=")
    if key not in spec:
      raise ValueError(f"config arg: unknown key {key!r} in {arg!r}; expected one of "
                       f"{sorted(spec)}")
    default = spec[key]
    if not has_value:
      if not isinstance(default, bool):
        raise ValueError(f"config arg: {key!r} needs a value (got bare {key!r} in {arg!r})")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config arg: {key!r} expects true/false, got {value!r}")
      out[key] = value.lower() in ("true", "1")
    elif default is None or isinstance(default, str):
      out[key] = value
    else:
      try:
        out[key] = type(default)(value)
      except ValueError as e:
        raise ValueError(f"config arg: {key!r} expects {type(default).__name__}, got "
                         f"{value!r}") from e
  return out


def to_json(config: Any) -> str:
  """The config (dataclass or ConfigDict) as JSON, for checkpoints and run records."""
  if dataclasses.is_dataclass(config):
    data = dataclasses.asdict(config)
  elif hasattr(config, "to_dict"):
    data = config.to_dict()
  else:
    data = dict(config)
  return json.dumps(data, indent=2, sort_keys=True, default=str)


def smoke(config: TrainConfig) -> TrainConfig:
  """Turns any config's run settings into a few CPU steps in seconds (the model is the
  config file's business: it picks the family's `smoke` sizes)."""
  config.total_steps = 1
  config.batch_size = 8
  config.data.source = "bundled"
  config.data.eval_source = "bundled"
  config.data.resolution = None  # The smoke model's image_size.
  config.data.num_eval_images = 2
  config.optim.warmup_steps = 1
  config.log_every = 1
  config.checkpoint_every = 1
  config.eval_every = 0
  config.grid_every = 1
  config.progress_bar = False
  config.evaluators = ()
  config.fast_compile = True
  if config.loss.gan_weight > 0:
    config.loss.gan_start_step = 0
  return config
