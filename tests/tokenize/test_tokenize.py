"""Token shards in-process (8 CPU devices, from tests/conftest.py): round trip, resume, errors."""
import json
import pickle

import jax
import msgpack
import numpy as np
import pytest
from PIL import Image

import jaxtok
from jaxtok import data as data_lib
from jaxtok import tokenize
from jaxtok.tokenize import records
from tests.data.common import prepare_tiny_tfds, write_hf_parquet, write_wds_shards
from tests.tokenize.common import photo_folder

N = 13  # Not a multiple of the batch or the shard size: padded last batch, short last shard.


@pytest.fixture(scope="module")
def tok():
  return jaxtok.load("titok:smoke")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("photos")
  return root, photo_folder(root, N)


def _by_index(ds) -> list[dict]:
  return sorted((ds[i] for i in range(len(ds))), key=lambda e: e["index"])


def test_round_trip_ids_equal_encode(tok, folder, tmp_path):
  root, names = folder
  assert jax.local_device_count() == 8
  summary = tokenize.tokenize(tok, f"folder:{root}", tmp_path / "out", batch_size=8,
                              shard_size=5, progress=False)
  assert summary["devices"] == 8 and summary["complete"]
  assert (summary["images"], summary["shards_written"], summary["num_shards"]) == (N, 3, 3)
  ds = tokenize.read(tmp_path / "out", verify=True)
  examples = _by_index(ds)
  assert [e["index"] for e in examples] == list(range(N))  # Every image, once.
  assert [e["image_id"] for e in examples] == names
  assert all("label" not in e for e in examples)
  ref = tok.encode(data_lib.eval_images(f"folder:{root}", tok.image_size))
  np.testing.assert_array_equal(np.stack([e["ids"] for e in examples]), ref)
  assert examples[0]["ids"].dtype == np.int32
  # grain reads it as a random-access source.
  import grain  # noqa: PLC0415
  first = next(iter(grain.MapDataset.source(ds)))
  assert set(first) == {"ids", "index", "image_id"}
  again = pickle.loads(pickle.dumps(ds))  # What grain's worker processes do with a source.
  np.testing.assert_array_equal(again[3]["ids"], ds[3]["ids"])


def test_folder_labels_and_unreadable_records(tok, tmp_path):
  root = tmp_path / "photos"
  names = photo_folder(root, 6, classes=2)
  (root / "class1" / "broken.png").write_bytes(b"not a png")
  summary = tokenize.tokenize(tok, f"folder:{root}", tmp_path / "out", batch_size=8,
                              shard_size=4, folder_labels=True, progress=False)
  assert summary["skipped"] == 1 and summary["images"] == 6
  ds = tokenize.read(tmp_path / "out")
  assert ds.spec["class_names"] == ["class0", "class1"]
  listing = sorted(names + ["class1/broken.png"])  # The source's record order.
  assert [s["index"] for s in ds.skipped] == [listing.index("class1/broken.png")]
  assert "broken.png" not in json.dumps([ds[i]["image_id"] for i in range(len(ds))])
  examples = _by_index(ds)
  assert [e["image_id"] for e in examples] == names
  assert [e["label"] for e in examples] == [int(n[5]) for n in names]


def test_resume_rewrites_only_missing_shards(tok, folder, tmp_path):
  root, _ = folder
  out = tmp_path / "out"
  tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4, progress=False)
  host = out / "host-00000-of-00001"
  manifest = json.loads((host / "manifest.json").read_text())
  before = {n: (host / n).read_bytes() for n in manifest["shards"]}
  # A crash: the manifest lost its last shard (killed before listing it), the shard file is
  # half written, and a temp file of another shard lies around.
  lost = sorted(manifest["shards"])[-1]
  del manifest["shards"][lost]
  manifest["complete"] = False
  (host / "manifest.json").write_text(json.dumps(manifest))
  (host / lost).write_bytes(before[lost][:100])
  (host / ".shard-00000-of-00004.array_record.tmp-1").write_bytes(b"partial")
  with pytest.raises(ValueError, match="not complete"):
    tokenize.read(out)
  assert len(tokenize.read(out, allow_partial=True)) == 12  # The 3 listed shards of 4.
  summary = tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4,
                              progress=False)
  assert (summary["shards_written"], summary["shards_skipped"], summary["images"]) == (1, 3, 1)
  assert sorted(p.name for p in host.iterdir()) == sorted([*before, "manifest.json"])
  assert {n: (host / n).read_bytes() for n in before} == before  # Deterministic content.
  ds = tokenize.read(out, verify=True)
  assert sorted(ds[i]["index"] for i in range(len(ds))) == list(range(N))
  # Rerunning a finished run writes nothing.
  again = tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4,
                            progress=False)
  assert (again["shards_written"], again["images"]) == (0, 0)


def test_resume_refuses_another_run(tok, folder, tmp_path):
  root, _ = folder
  out = tmp_path / "out"
  tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=8, progress=False)
  other = jaxtok.load("titok:smoke", seed=1)
  with pytest.raises(ValueError, match="fingerprint"):
    tokenize.tokenize(other, f"folder:{root}", out, batch_size=8, shard_size=8, progress=False)
  with pytest.raises(ValueError, match="shard_size"):
    tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4, progress=False)
  (out / "host-00001-of-00002").mkdir()  # A run on 2 hosts wrote here too.
  with pytest.raises(ValueError, match="another number of hosts"):
    tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=8, progress=False)
  with pytest.raises(ValueError, match="different host counts"):
    tokenize.read(out)


def test_bad_arguments(tok, folder, tmp_path):
  root, _ = folder
  with pytest.raises(ValueError, match="batch_size: expected a multiple of the 8"):
    tokenize.tokenize(tok, f"folder:{root}", tmp_path, batch_size=6, progress=False)
  with pytest.raises(ValueError, match="shard_size"):
    tokenize.tokenize(tok, f"folder:{root}", tmp_path, shard_size=0, progress=False)
  with pytest.raises(ValueError, match="source"):
    tokenize.tokenize(tok, "images/", tmp_path, progress=False)
  with pytest.raises(ValueError, match="folder_labels"):
    tokenize.tokenize(tok, "bundled", tmp_path, folder_labels=True, progress=False)
  with pytest.raises(ValueError, match="host-HHHHH"):
    tokenize.read(tmp_path)


def test_example_format():
  ids = np.array([0, 4095, 17], np.int32)
  blob = records.encode_example(ids, records.ids_dtype(4096, False), 5, "a/b.png", 3)
  out = records.decode_example(blob)
  np.testing.assert_array_equal(out["ids"], ids)
  assert (out["index"], out["image_id"], out["label"]) == (5, "a/b.png", 3)
  assert len(blob) < 3 * 2 + 60  # uint16 ids: 2 bytes each plus a small header.
  fact = np.array([[1, 2], [3, 4]])
  out = records.decode_example(records.encode_example(fact, np.dtype("<u1"), 0, "x", None))
  np.testing.assert_array_equal(out["ids"], fact)
  assert "label" not in out
  with pytest.raises(ValueError, match="ids: expected values in"):
    records.encode_example(np.array([256]), np.dtype("<u1"), 0, "x", None)
  future = msgpack.packb({**msgpack.unpackb(blob), "v": 2})
  with pytest.raises(ValueError, match="version 1"):
    records.decode_example(future)
  with pytest.raises(ValueError, match="not a jaxtok token example"):
    records.decode_example(b"\xc1garbage")


def test_tfds_source_keeps_labels(tok, tmp_path):
  name = prepare_tiny_tfds(tmp_path / "tfds")
  tokenize.tokenize(tok, f"tfds:{name}:train", tmp_path / "out", batch_size=8, shard_size=4,
                    tfds_data_dir=str(tmp_path / "tfds"), progress=False)
  examples = _by_index(tokenize.read(tmp_path / "out"))
  assert [e["index"] for e in examples] == list(range(7))
  import tensorflow_datasets as tfds  # noqa: PLC0415
  records = tfds.data_source(name, split="train", data_dir=str(tmp_path / "tfds"))
  assert [e["label"] for e in examples] == [int(records[i]["label"]) for i in range(7)]
  assert len({e["label"] for e in examples}) == 3
  assert [e["image_id"] for e in examples] == [str(i) for i in range(7)]
  ref = tok.encode(data_lib.eval_images(f"tfds:{name}:train", tok.image_size,
                                        tfds_data_dir=str(tmp_path / "tfds")))
  np.testing.assert_array_equal(np.stack([e["ids"] for e in examples]), ref)


def test_resume_redoes_changed_or_damaged_shards(tok, tmp_path):
  """Issue 24 item 9: an edited image (same file count) kept its stale tokens, a shard whose
  bytes changed (same size) was not re-verified, a sub-directory crashed the rerun."""
  root = tmp_path / "photos"
  root.mkdir()
  names = photo_folder(root, N)
  out = tmp_path / "out"
  tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4, progress=False)
  host = out / "host-00000-of-00001"
  shards = sorted(json.loads((host / "manifest.json").read_text())["shards"])
  # Replace the first image by another picture: same name, same file count.
  first = root / names[0]
  Image.fromarray(255 - np.asarray(Image.open(first).convert("RGB"))).save(first)
  # Flip one byte inside the last shard (its size stays).
  raw = bytearray((host / shards[-1]).read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  (host / shards[-1]).write_bytes(bytes(raw))
  (host / "notes").mkdir()
  summary = tokenize.tokenize(tok, f"folder:{root}", out, batch_size=8, shard_size=4,
                              progress=False)
  assert (summary["shards_written"], summary["shards_skipped"]) == (2, len(shards) - 2)
  assert (host / "notes").is_dir()  # Not ours: left alone.
  examples = _by_index(tokenize.read(out, verify=True))
  ref = tok.encode(data_lib.eval_images(f"folder:{root}", tok.image_size))
  np.testing.assert_array_equal(np.stack([e["ids"] for e in examples]), ref)


@pytest.mark.parametrize("kind", ["wds", "hf"])
def test_shard_and_hf_sources_keep_ids_and_labels(kind, tok, tmp_path):
  if kind == "wds":
    write_wds_shards(tmp_path / "wds", [3, 3])
    source, want_ids = f"wds:{tmp_path}/wds/*.tar", [f"sample{i:06d}" for i in range(6)]
  else:
    pytest.importorskip("datasets")
    source, want_ids = f"hf:{write_hf_parquet(tmp_path / 'pq', 6)}", [f"row{i}" for i in range(6)]
  tokenize.tokenize(tok, source, tmp_path / "out", batch_size=8, shard_size=4, progress=False)
  examples = _by_index(tokenize.read(tmp_path / "out"))
  assert [e["image_id"] for e in examples] == want_ids
  assert [e["label"] for e in examples] == [i % 5 for i in range(6)]
  ref = tok.encode(data_lib.eval_images(source, tok.image_size))
  np.testing.assert_array_equal(np.stack([e["ids"] for e in examples]), ref)
