"""The networks the train step closes over, built from the config.

Frozen: the stage-1 proxy-code teacher (the family's `stage1_teacher`), the perceptual network,
FQGAN's semantic teachers, REPA's teacher; trained: the GAN discriminator. Each is a `Net`
record (graphdef + pure-dict params and state), or None when the config leaves it off;
`frozen_apply` / `disc_apply` turn a graphdef into the function the step calls.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from flax import nnx

from jaxtok.nets import discriminator, perceptual, teachers
from jaxtok.tokenizers import get_family
from jaxtok.trainers.config import TrainConfig
from jaxtok.trainers.state import PyTree, split_pure


class Net(NamedTuple):
  """A network split for the step: its structure and its variables as pure dicts."""
  graphdef: Any
  params: PyTree
  state: PyTree

  @classmethod
  def of(cls, module: nnx.Module) -> Net:
    return cls(*split_pure(module))

  @property
  def variables(self) -> tuple[PyTree, PyTree]:
    """(params, state): what the step receives as arguments (`frozen_apply`'s first)."""
    return self.params, self.state


def teacher_network(config: TrainConfig, model_config: Any):
  """The family's frozen stage-1 proxy-code teacher: `Net` or None."""
  if config.recipe != "stage1":
    return None
  fam = get_family(config.family)
  if fam.stage1_teacher is None:
    raise ValueError(f"recipe: 'stage1' needs a family with a proxy-code teacher, got "
                     f"{config.family!r}")
  return Net.of(fam.stage1_teacher(model_config, config.teacher, config.seed + 1))


def discriminator_network(config: TrainConfig):
  """`Net` of TiTok's GAN discriminator, or None when the GAN is off."""
  if config.loss.gan_weight <= 0 or config.recipe == "stage1":
    return None
  return Net.of(discriminator.NLayerDiscriminator(rngs=nnx.Rngs(config.seed + 2)))


def perceptual_network(config: TrainConfig):
  """Frozen perceptual network (`config.loss.perceptual`) as a `Net`."""
  spec = config.loss.perceptual
  if not spec or config.loss.perceptual_weight <= 0 or config.recipe == "stage1":
    return None
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
  return Net.of(net)


def semantic_networks(config: TrainConfig, model_config: Any):
  """Frozen teachers of the model's semantic branches (FQGAN alignment):
  `{branch: Net}` in branch order, or None when
  `config.loss.semantic_weight` is 0. Branches naming the same teacher share one network."""
  weight = config.loss.semantic_weight
  if not weight or weight <= 0:
    return None
  heads = getattr(model_config, "feature_heads", None) or {}
  if not heads:
    raise ValueError(f"loss.semantic_weight: expected 0 for this model ({config.family!r} "
                     f"with no semantic branch / feature-prediction head), got {weight}")
  if config.recipe == "stage1":
    raise ValueError("loss.semantic_weight: expected 0 under recipe 'stage1' (proxy-code "
                     f"training has no semantic alignment), got {weight}")
  branches = [b for b in model_config.branches if b in heads]
  names = config.loss.semantic_teachers(branches)
  built: dict[str, Any] = {}
  out = {}
  for b in branches:
    name = names[b]
    width = teachers.teacher_width(name)
    if width != heads[b][0]:
      raise ValueError(f"loss.semantic_teacher: teacher {name!r} gives {width}-wide features "
                       f"but branch {b!r}'s feature head is {heads[b][0]} wide "
                       f"(model.feature_heads); expected a teacher of width {heads[b][0]}")
    if name in teachers.RELEASED_TEACHERS and teachers.hf_cache_dir(name) is None:
      fits = [f"inception:{k}" for k, w in teachers.INCEPTION_WIDTHS.items() if w == width]
      instead = (f"a {width}-wide offline stand-in ({', '.join(fits)})" if fits else
                 "--config.loss.semantic_weight=0 (no offline teacher is "
                 f"{width} wide)")
      raise ValueError(f"loss.semantic_teacher: branch {b!r} names the released teacher "
                       f"{name!r}, whose weights are not in the local Hugging Face cache; "
                       f"expected '{teachers.RELEASED_KINDS[name]}:<dir>' (a directory with "
                       f"its config.json and model.safetensors) or {instead}")
    if name not in built:
      built[name] = Net.of(teachers.build_teacher(name))
    out[b] = built[name]
  return out


def repa_network(config: TrainConfig, model_config: Any):
  """REPA's frozen teacher (`config.loss.repa_teacher`) as a `Net`, or None
  when `config.loss.repa_weight` is 0."""
  weight = config.loss.repa_weight
  if not weight or weight <= 0:
    return None
  layer = getattr(model_config, "repa_layer", None)
  if layer is None:
    raise ValueError(f"loss.repa_weight: expected 0 for a model without a REPA projector "
                     f"({config.family!r} with model.repa_layer unset), got {weight}")
  if config.recipe == "stage1":
    raise ValueError(f"loss.repa_weight: expected 0 under recipe 'stage1', got {weight}")
  name = config.loss.repa_teacher
  if not name:
    raise ValueError("loss.repa_teacher: expected a teacher name (jaxtok.nets.teachers."
                     "build_teacher, e.g. 'inception:mixed_2:75' or 'dinov2:<dir>') when "
                     "repa_weight > 0, got ''")
  width = teachers.teacher_width(name)
  if width != model_config.repa_dim:
    raise ValueError(f"loss.repa_teacher: teacher {name!r} gives {width}-wide patch features "
                     f"but the model's REPA projector outputs model.repa_dim="
                     f"{model_config.repa_dim}; expected a teacher of width "
                     f"{model_config.repa_dim} (or --config.model.repa_dim={width})")
  return Net.of(teachers.build_teacher(name))


def frozen_apply(graphdef, method: str | None = None):
  """`(frozen (params, state), *args) -> module(*args)` for a frozen network."""
  def apply(frozen, *args):
    module = nnx.merge(graphdef, frozen[0], frozen[1])
    return (getattr(module, method) if method else module)(*args)
  return apply


def disc_apply(graphdef):
  """`(disc_params, disc_state, images) -> (logits, new disc_state)`."""
  def apply(params, disc_state, images):
    disc = nnx.merge(graphdef, params, disc_state)
    logits = disc(images)
    return logits, nnx.to_pure_dict(nnx.state(disc, nnx.Not(nnx.Param)))
  return apply
