"""Parity of the FQGAN tokenizer with the official showlab/FQGAN code.

Fixtures: every `.npz` of kind `fqgan` under tests/fixtures/fqgan/ and in $JAXTOK_EXTRA_FIXTURES
(tests/fixtures/fqgan/README.md). The model configuration, the branch names and the teacher
preprocessing come from the file alone; the weights are loaded through the converter's
name mapping. Tolerances (README §5): ids exact; |got - want| <= 1e-4 * max|want| + 1e-5;
quantities read from the codebooks 1e-6.
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtok.tokenizers.fqgan import convert as fqgan_mapping
from jaxtok.tokenizers.fqgan import model as fqgan_model
from jaxtok.tokenizers.quantizers import core
from tests.fixture_files import FIXTURES as FIXTURE_ROOT
from tests.fixture_files import fixture_params

ROOT = FIXTURE_ROOT / "fqgan"
FIXTURES = fixture_params("fqgan", ROOT)


def _nhwc(a):
  return jnp.asarray(np.transpose(a, (0, 2, 3, 1)))


def _nchw(a):
  return np.transpose(np.asarray(a), (0, 3, 1, 2))


def _close(name, got, want, *, atol=None):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
  tol = atol if atol is not None else 1e-4 * float(np.max(np.abs(want), initial=0.0)) + 1e-5
  err = float(np.max(np.abs(got - want), initial=0.0))
  assert err <= tol, f"{name}: max |diff| {err:.3g} > {tol:.3g}"


class _Fixture:
  def __init__(self, path):
    self.f = np.load(path, allow_pickle=False)
    self.cfg = json.loads(str(self.f["config_json"]))
    self.config = fqgan_mapping.official_fqgan_config(self.cfg)
    params = {k[len("param/"):]: self.f[k] for k in self.f.files if k.startswith("param/")}
    self.params = params
    self.model = fqgan_mapping.fqgan_from_params(self.config, params)
    self.branches = list(self.cfg["branches"])

  def __getitem__(self, k):
    return self.f[k]


@pytest.fixture(scope="module", params=FIXTURES)
def fx(request):
  return _Fixture(request.param)


def test_fixtures_found():
  assert FIXTURES, f"no fqgan fixture under {ROOT}"


def test_config_from_file(fx):
  c, cfg = fx.config, fx.cfg
  assert sorted(c.branches) == sorted(cfg["branches"])
  assert list(c.branches) == cfg["concat_order"]
  assert c.image_size == cfg["image_size"] == fx["x"].shape[-1]
  assert c.downsample_factor == cfg["down_factor"]
  assert c.trunk_width == cfg["trunk_width"]
  assert tuple(cfg["latent_grid"]) == (c.grid_size, c.grid_size)


def test_forward(fx):
  m = fx.model
  x = _nhwc(fx["x"])

  @nnx.jit
  def run(m, x):
    cap = {}
    recon, aux = m.forward_official(x, train=False, capture=cap)
    return recon, aux, cap

  recon, aux, cap = run(m, x)
  for i in range(len(fx.config.encoder_ch_mult)):
    _close(f"enc_level{i}", _nchw(cap[f"enc_level{i}"]), fx[f"enc_level{i}"])
  _close("enc_mid", _nchw(cap["enc_mid"]), fx["enc_mid"])
  k, d = fx.config.codebook_size, fx.config.codebook_dim
  for i, b in enumerate(fx.config.branches):
    _close(f"enc_adapter_{b}", _nchw(cap[f"enc_adapter_{b}"]), fx[f"enc_adapter_{b}"])
    _close(f"h_{b}", _nchw(cap[f"h_{b}"]), fx[f"h_{b}"])
    z = cap[f"z_{b}"]
    _close(f"z_{b}", _nchw(z), fx[f"z_{b}"])
    zn = core.l2_normalize(z)
    _close(f"z_normalized_{b}", _nchw(zn), fx[f"z_normalized_{b}"])
    cb = m.quantize.quantizers[i].lookup(jnp.arange(k, dtype=jnp.int32))
    _close(f"codebook_normalized_{b}", cb, fx[f"codebook_normalized_{b}"], atol=1e-6)
    neg_d = -core.pairwise_sq_distances(zn.reshape(-1, d), cb)
    _close(f"neg_d_{b}", neg_d, fx[f"neg_d_{b}"])
    ids = np.asarray(aux["ids"][..., i]).reshape(fx[f"indices_{b}"].shape)
    np.testing.assert_array_equal(ids, fx[f"indices_{b}"], err_msg=f"indices_{b}")
    _close(f"quant_{b}", _nchw(m.branch_slice(cap["concat"], b)), fx[f"quant_{b}"], atol=1e-6)
    losses = aux["factor_losses"][i]
    _close(f"vq_loss_{b}", losses["codebook_loss"], fx[f"vq_loss_{b}"])
    _close(f"commit_loss_{b}", losses["commitment_loss"], fx[f"commit_loss_{b}"])
    _close(f"entropy_loss_{b}", losses["entropy_loss"], fx[f"entropy_loss_{b}"])
    # The official usage counts code 0 as used (its log buffer starts at zeros).
    quirk = 0.0 if (ids == 0).any() else 1.0 / k
    _close(f"usage_{b}", float(aux["stats"][f"usage/{i}"]) + quirk, fx[f"usage_{b}"],
           atol=1e-7)
  assert sorted(fx.branches) == sorted(fx.config.branches)
  _close("disentangle_loss", aux["disentangle_loss"], fx["disentangle_loss"])
  _close("concat", _nchw(cap["concat"]), fx["concat"], atol=1e-6)
  _close("post_quant", _nchw(cap["post_quant"]), fx["post_quant"])
  _close("dec_conv_in", _nchw(cap["dec_conv_in"]), fx["dec_conv_in"])
  _close("dec_mid", _nchw(cap["dec_mid"]), fx["dec_mid"])
  for j in range(len(fx.config.decoder_ch_mult)):
    if f"dec_level{j}" in fx.f.files:
      _close(f"dec_level{j}", _nchw(cap[f"dec_level{j}"]), fx[f"dec_level{j}"])
  _close("recon", _nchw(recon), fx["recon"])
  _close("rec_loss", jnp.mean((recon - x) ** 2), fx["rec_loss"])
  for b in fx.config.feature_heads:
    _close(f"feat_pred_{b}", aux["semantic_features"][b], fx[f"feat_pred_{b}"])
    loss = fqgan_model.infonce_cls_loss(aux["semantic_features"][b][:, 0],
                                  jnp.asarray(fx[f"teacher_{b}"]))
    _close(f"semantic_loss_{b}", loss, fx[f"semantic_loss_{b}"])
  # The public API: [0, 1] images, ids [B, h*w, k] in branch order.
  ids = m.encode(x * 0.5 + 0.5)
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(aux["ids"]))
  assert ids.dtype == jnp.int32 and ids.shape[-1] == len(fx.config.branches)


def test_teacher_preprocessing(fx):
  s = fx.config.image_size
  np.testing.assert_array_equal(fqgan_model.teacher_resize_rows(s),
                                fx["teacher_resize_rows_from_S"])
  np.testing.assert_array_equal(fqgan_model.teacher_resize_rows(256),
                                fx["teacher_resize_rows_from_256"])
  x = _nhwc(fx["x"])
  for b, prep in fx.cfg["teacher_preprocessing"].items():
    got = fqgan_model.teacher_preprocess(x, prep["mean"], prep["std"])
    assert got.shape == (x.shape[0], 224, 224, 3)
    _close(f"teacher_prep_{b}", _nchw(got[:, ::16, ::16]), fx[f"teacher_prep_{b}"])


def test_decode_code_official_order(fx):
  m, c = fx.model, fx.config
  args = []
  for b in c.decode_code_order:
    idx = fx[f"indices_{b}"]
    args.append(jnp.asarray(idx.reshape(-1)))
  shapes = [(idx_shape[0], c.codebook_dim, idx_shape[1], idx_shape[2])
            for idx_shape in (fx[f"indices_{b}"].shape for b in c.decode_code_order)]
  recon = m.decode_code(*args, *shapes)
  _close("recon_from_indices", _nchw(recon), fx["recon_from_indices"])
  ids = jnp.stack([jnp.asarray(fx[f"indices_{b}"]).reshape(recon.shape[0], -1)
                   for b in c.branches], axis=-1)
  _close("concat_from_indices", _nchw(m.lookup(ids)), fx["concat_from_indices"], atol=1e-6)
  _close("recon_from_indices (decode_tokens)", _nchw(m.decode_tokens(ids) * 2 - 1),
         fx["recon_from_indices"])


def test_generator_loss_and_gradients(fx):
  m, c = fx.model, fx.config
  meta = json.loads(str(fx["meta_json"]))
  w_sem = float(fx.cfg["vq_loss_args"]["semantic_weight"])
  w_rec = float(fx.cfg["vq_loss_args"]["reconstruction_weight"])
  teachers = {b: jnp.asarray(fx[f"teacher_{b}"]) for b in c.feature_heads}
  r = _nhwc(fx["grad_R"])
  graphdef, params, rest = nnx.split(m, nnx.Param, ...)

  def scalar(params, x):
    model = nnx.merge(graphdef, params, rest)
    recon, aux = model.forward_official(x, train=False)
    sem = model.semantic_losses(aux, teachers)
    gen = (w_rec * jnp.mean((x - recon) ** 2) + aux["losses"]["quantizer"]
           + w_sem * sum(sem.values()))
    return gen + jnp.sum(recon * r), gen

  (total, gen), (g_params, g_x) = jax.jit(jax.value_and_grad(scalar, argnums=(0, 1),
                                                              has_aux=True))(
      params, _nhwc(fx["x"]))
  _close("vqloss_gen_partial", gen, fx["vqloss_gen_partial"])
  _close("grad_scalar", total, fx["grad_scalar"])
  _close("grad_x", _nchw(g_x), fx["grad_x"])
  rules = fqgan_mapping.fqgan_rules(c, fx.params)
  flat = dict(nnx.to_flat_state(g_params))
  names = meta["grad_param_names"]
  assert names
  for name in names:
    rule = rules[name]
    got = np.asarray(flat[rule[0]][...])
    if len(rule) == 3:
      got = got[rule[2]]
    _close(f"grad/{name}", got, rule[1](fx[f"grad/{name}"]))
