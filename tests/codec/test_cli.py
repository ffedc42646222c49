"""`python -m jaxtok.codec`: compress/decompress/info/fit-prior on files, and bad input."""
import json

import numpy as np
import pytest
from flax import nnx
from PIL import Image

import jaxtok
from jaxtok import codec, data
from jaxtok.codec import __main__ as cli
from jaxtok.codec import rd
from jaxtok.tokenizers.titok import TiTokConfig
from jaxtok.tokenizers.titok.one_d_piece import OneDPiece


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
  cfg = TiTokConfig(image_size=16, enc_patch_size=8, dec_patch_size=8, enc_width=32,
                    enc_depth=1, enc_heads=2, dec_width=32, dec_depth=1, dec_heads=2,
                    num_latent_tokens=4, token_size=4, codebook_size=32, head="pixel",
                    legacy_projection=False, use_l2_norm=False, tail_token_drop=True)
  return str(jaxtok.save(jaxtok.Tokenizer(OneDPiece(cfg, rngs=nnx.Rngs(0))),
                         tmp_path_factory.mktemp("ck") / "odp"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  d = tmp_path_factory.mktemp("photos")
  rng = np.random.default_rng(0)
  for i in range(3):
    Image.fromarray(rng.integers(0, 256, (20 + 4 * i, 24, 3), dtype=np.uint8)).save(
        d / f"p{i}.png")
  return d


def test_compress_info_decompress(ckpt, photos, tmp_path, capsys):
  out = cli.run(["compress", "--checkpoint", ckpt, str(photos), "--out", str(tmp_path / "j")])
  files = sorted((tmp_path / "j").glob("*.jtok"))
  assert [f.name for f in files] == ["p0.jtok", "p1.jtok", "p2.jtok"]
  assert [r["bytes"] for r in out["files"]] == [f.stat().st_size for f in files]
  info = cli.run(["info", str(tmp_path / "j")])
  assert [r["num_tokens"] for r in info["files"]] == [4, 4, 4]
  assert info["files"][0]["prior"] == "uniform"
  cli.run(["decompress", "--checkpoint", ckpt, str(tmp_path / "j"), "--out",
           str(tmp_path / "png")])
  tok = jaxtok.load(ckpt)
  src = np.stack([data.center_crop_resize(np.asarray(Image.open(photos / f"p{i}.png")), 16)
                  for i in range(3)])
  want = np.round(tok.decode(tok.encode(src)) * 255).astype(np.uint8)
  got = np.stack([np.asarray(Image.open(tmp_path / "png" / f"p{i}.png")) for i in range(3)])
  np.testing.assert_array_equal(got, want)
  assert json.loads(capsys.readouterr().out.split("\n}\n")[0] + "\n}")["files"]


@pytest.mark.slow  # Grain stream + 2 compiles: ~15 s on a loaded CPU.
def test_fit_prior_and_marginal_files(ckpt, photos, tmp_path):
  res = cli.run(["fit-prior", "--checkpoint", ckpt, "--data", f"folder:{photos}",
                 "--num-images", "24", "--batch-size", "8", "--out", str(tmp_path / "p.npz")])
  prior = codec.MarginalPrior.load(res["file"])
  assert prior.num_sequences == 24
  cli.run(["compress", "--checkpoint", ckpt, str(photos / "p1.png"), "--out",
           str(tmp_path / "m"), "--prior", str(tmp_path / "p.npz"), "--num-tokens", "2"])
  h = codec.read_header((tmp_path / "m" / "p1.jtok").read_bytes())
  assert (h.prior, h.num_tokens) == ("marginal", 2)
  assert cli.main(["decompress", "--checkpoint", ckpt, str(tmp_path / "m"), "--out",
                   str(tmp_path / "o")]) == 2  # Marginal file, no prior given.
  assert cli.main(["decompress", "--checkpoint", ckpt, str(tmp_path / "m"), "--out",
                   str(tmp_path / "o"), "--prior", str(tmp_path / "p.npz")]) == 0
  assert (tmp_path / "o" / "p1.png").is_file()


@pytest.mark.slow  # The Python path is tested in tests/codec/test_jtok.py.
def test_adaptive_compress(ckpt, photos, tmp_path):
  out = cli.run(["compress", "--checkpoint", ckpt, str(photos), "--out", str(tmp_path / "a"),
                 "--target", "psnr:0"])
  assert [r["num_tokens"] for r in out["files"]] == [1, 1, 1]


def test_errors_exit_2(ckpt, photos, tmp_path, capsys):
  bad = tmp_path / "bad.jtok"
  bad.write_bytes(b"JTK\x01garbage-garbage")
  assert cli.main(["info", str(bad)]) == 2
  assert "checksum" in capsys.readouterr().err
  assert cli.main(["compress", "--checkpoint", ckpt, str(tmp_path / "nope"), "--out",
                   str(tmp_path)]) == 2
  assert cli.main(["compress", "--checkpoint", ckpt, str(photos), "--out", str(tmp_path),
                   "--target", "psnr"]) == 2
  assert "--target" in capsys.readouterr().err


@pytest.mark.slow  # Every prefix length, 3 codecs x 2 qualities, adaptive targets: ~30 s.
def test_rd_command_writes_plot_and_figures(ckpt, photos, tmp_path):
  prior = tmp_path / "prior.npz"
  tok = jaxtok.load(ckpt)
  codec.fit_marginal(tok, [data.eval_images(f"folder:{photos}", 16)]).save(prior)
  res = cli.run(["rd", "--checkpoint", ckpt, "--data", f"folder:{photos}", "--out",
                 str(tmp_path / "rd"), "--prior", str(prior), "--qualities", "30,80"])
  mvu = res["marginal_vs_uniform"]
  assert mvu["tokens"] == 4 and mvu["uniform_bytes"] > 0 and mvu["marginal_bytes"] > 0
  assert len(res["adaptive_vs_fixed"]) >= 1
  for name in ("rate_distortion.json", "rate_distortion.png", "figures.json"):
    assert (tmp_path / "rd" / name).is_file()


def test_rd_command_lengths_and_targets(ckpt, photos, tmp_path, capsys):
  prior = tmp_path / "prior.npz"
  tok = jaxtok.load(ckpt)
  codec.fit_marginal(tok, [data.eval_images(f"folder:{photos}", 16)]).save(prior)
  args = ["rd", "--checkpoint", ckpt, "--data", f"folder:{photos}", "--out",
          str(tmp_path / "rd"), "--prior", str(prior), "--qualities", "50"]
  res = cli.run([*args, "--lengths", "2,4", "--targets", "0"])
  curves = json.loads((tmp_path / "rd" / "rate_distortion.json").read_text())["curves"]
  assert [p["tokens"] for p in curves["tokenizer/marginal"]] == [2, 4]
  assert [p["target"] for p in curves["adaptive/marginal"]] == [0.0]
  assert curves["adaptive/marginal"][0]["mean_tokens"] == 1  # Every length reaches 0 dB.
  assert res["marginal_vs_uniform"]["tokens"] == 4
  assert cli.main([*args, "--lengths", "2,x"]) == 2
  assert "--lengths: expected 'all' or a comma list" in capsys.readouterr().err
  assert cli.main([*args, "--lengths", "0,4"]) == 2
  assert "lengths: expected some of the usable prefix lengths 1..4" in capsys.readouterr().err


def test_rd_sizes_match_compress(ckpt, photos, tmp_path):
  tok = jaxtok.load(ckpt)
  images = data.eval_images(f"folder:{photos}", 16)
  prior = codec.fit_marginal(tok, [images])
  prior.save(tmp_path / codec.MARGINAL_FILE)
  res = rd.rate_distortion(tok, images, codecs=(), lengths=[2, 4],
                           jtok_priors={"uniform": "uniform", "marginal": prior})
  for name, p in (("uniform", "uniform"), ("marginal", prior)):
    want = [np.mean([len(b) for b in codec.compress(tok, images, prior=p, num_tokens=k)])
            for k in (2, 4)]
    assert [q["bytes_per_image"] for q in res["curves"][f"tokenizer/{name}"]] == want


def test_colliding_outputs_are_refused(ckpt, photos, tmp_path, capsys):
  """Issue 24 item 3: a.png, a.jpg and sub/a.png wrote one a.jtok; j1/b.jtok, j2/b.jtok one
  b.png. Now folders are mirrored and true collisions refused before any file is written."""
  src = tmp_path / "src"
  (src / "sub").mkdir(parents=True)
  img = np.asarray(Image.open(photos / "p0.png"))
  Image.fromarray(img).save(src / "a.png")
  Image.fromarray(img).save(src / "a.jpg")
  Image.fromarray(img[::-1]).save(src / "sub" / "a.png")
  out = tmp_path / "j"
  assert cli.main(["compress", "--checkpoint", ckpt, str(src), "--out", str(out)]) == 2
  err = capsys.readouterr().err
  assert "a.jpg" in err and "a.png" in err and "would both be written" in err
  assert not out.exists()
  (src / "a.jpg").unlink()
  res = cli.run(["compress", "--checkpoint", ckpt, str(src), "--out", str(out)])
  assert sorted(str(p.relative_to(out)) for p in out.rglob("*.jtok")) == ["a.jtok",
                                                                          "sub/a.jtok"]
  assert len(res["files"]) == 2
  # Existing outputs are kept unless --overwrite.
  assert cli.main(["compress", "--checkpoint", ckpt, str(src), "--out", str(out)]) == 2
  assert "--overwrite" in capsys.readouterr().err
  cli.run(["compress", "--checkpoint", ckpt, str(src), "--out", str(out), "--overwrite"])
  # Two blobs of one name in different folders, named as files: one b.png -> refused.
  for d in ("j1", "j2"):
    (tmp_path / d).mkdir()
  (tmp_path / "j1" / "b.jtok").write_bytes((out / "a.jtok").read_bytes())
  (tmp_path / "j2" / "b.jtok").write_bytes((out / "sub" / "a.jtok").read_bytes())
  assert cli.main(["decompress", "--checkpoint", ckpt, str(tmp_path / "j1" / "b.jtok"),
                   str(tmp_path / "j2" / "b.jtok"), "--out", str(tmp_path / "png")]) == 2
  assert "would both be written" in capsys.readouterr().err
  assert not (tmp_path / "png").exists()


def test_bad_numbers_and_unreadable_images(ckpt, photos, tmp_path, capsys):
  """Issue 24 item 7: --batch-size 0 printed a range() error; one unreadable image aborted
  the whole run with a traceback."""
  for flag, value in (("--batch-size", "0"), ("--num-tokens", "-1"), ("--num-tokens", "2.7")):
    with pytest.raises(SystemExit) as info:
      cli.main(["compress", "--checkpoint", ckpt, str(photos), "--out", str(tmp_path / "x"),
                flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: expected a positive int" in capsys.readouterr().err
  src = tmp_path / "src"
  src.mkdir()
  Image.open(photos / "p0.png").save(src / "good.png")
  (src / "broken.png").write_bytes(b"\x89PNG not really")
  assert cli.main(["compress", "--checkpoint", ckpt, str(src), "--out", str(tmp_path / "j")]) == 1
  assert [p.name for p in (tmp_path / "j").iterdir()] == ["good.jtok"]
  res = json.loads(capsys.readouterr().out)
  assert res["skipped"][0]["file"].endswith("broken.png")
  assert "not a readable image" in res["skipped"][0]["error"]
