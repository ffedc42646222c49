"""`wds:` (WebDataset tar shards) and `hf:` (Hugging Face datasets on disk) sources: records,
readers, bad input, and one epoch over two hosts seeing each image exactly once."""
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from jaxtok import data
from tests.data.common import colour_id, id_png, take, write_hf_parquet, write_wds_shards
from tests.processes import free_port, wait_all

WORKER = Path(__file__).with_name("mp_data_worker.py")


def test_parse_wds_and_hf_sources():
  assert data.parse_source("wds:/d/train-{000..009}.tar") == ("wds", "/d/train-{000..009}.tar",
                                                              "")
  assert data.parse_source("hf:/data/ds") == ("hf", "/data/ds", "")
  assert data.parse_source("hf:/data/ds:validation") == ("hf", "/data/ds", "validation")
  for source in ("wds:", "hf:", "webdataset:/x"):
    with pytest.raises(ValueError, match="source: expected"):
      data.parse_source(source)


def test_expand_braces():
  assert data.expand_braces("a-{08..11}.tar") == ["a-08.tar", "a-09.tar", "a-10.tar", "a-11.tar"]
  assert data.expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]
  assert data.expand_braces("plain.tar") == ["plain.tar"]
  with pytest.raises(ValueError, match="backwards"):
    data.expand_braces("{3..1}")
  with pytest.raises(ValueError, match="expected"):
    data.expand_braces("{abc}")


def test_wds_records_labels_and_readers(tmp_path):
  write_wds_shards(tmp_path, [3, 4])
  with tarfile.open(tmp_path / "shard-000001.tar", "a") as tar:  # A sample of two images:
    info = tarfile.TarInfo("sample000006.jpg")  # the first one is the record.
    payload = b"not read"
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))
  records, reader = data.open_source(f"wds:{tmp_path}/shard-{{000000..000001}}.tar")
  assert [r.key for r in records] == [f"sample{i:06d}" for i in range(7)]
  assert [colour_id(reader(r)) for r in records] == list(range(7))
  ex = reader.example(records[5])
  assert ex["__key__"] == "sample000005" and ex["label"] == 0
  assert colour_id(reader.image(ex, "x")) == 5
  assert isinstance(pickle.loads(pickle.dumps(reader)), data.TarReader)
  assert data.open_source(f"wds:{tmp_path}/*.tar")[0] == records  # Globs work too.


def test_wds_bad_input(tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    data.open_source(f"wds:{tmp_path}/shard-{{0..1}}.tar")
  (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b" + b"\0" * 600)
  with pytest.raises(ValueError, match="not an uncompressed tar"):
    data.open_source(f"wds:{tmp_path}/x.tar.gz")
  empty = tmp_path / "empty.tar"
  with tarfile.open(empty, "w"):
    pass
  with pytest.raises(ValueError, match="hold no"):
    data.open_source(f"wds:{empty}")


def test_wds_corrupt_member_is_skipped_and_counted(tmp_path):
  shard = write_wds_shards(tmp_path, [6], labels=False, extra=False)[0]
  raw = bytearray(shard.read_bytes())
  records, _ = data.open_source(f"wds:{shard}")
  bad = records[2]
  raw[bad.offset:bad.offset + bad.size] = b"\0" * bad.size  # Zeroed bytes: not a PNG.
  shard.write_bytes(bytes(raw))
  cfg = data.DataConfig(source=f"wds:{shard}", resolution=8, shuffle=False)
  it = data.create_train_iterator(cfg, batch_size=5)
  ids = [colour_id(im) for im in take(it, 1)[0]]
  assert ids == [0, 1, 3, 4, 5] and it.stats["skipped"] == 1


def test_hf_parquet_and_save_to_disk(tmp_path):
  datasets = pytest.importorskip("datasets")
  folder = write_hf_parquet(tmp_path / "pq", 7)
  records, reader = data.open_source(f"hf:{folder}")
  assert records == range(7)
  assert [colour_id(reader(i)) for i in records] == list(range(7))
  ex = reader.example(3)
  assert ex["label"] == 3 and ex["id"] == "row3"
  restored = pickle.loads(pickle.dumps(reader))  # Workers reopen it lazily.
  assert restored._ds is None and colour_id(restored(6)) == 6
  one = sorted(folder.glob("*.parquet"))[0]
  assert len(data.open_source(f"hf:{one}")[0]) == 4
  # A DatasetDict saved with save_to_disk: splits by name.
  dd = datasets.DatasetDict({
      "train": datasets.Dataset.from_parquet(str(one)),
      "validation": datasets.Dataset.from_parquet(str(sorted(folder.glob("*.parquet"))[1]))})
  dd.save_to_disk(str(tmp_path / "saved"))
  assert len(data.open_source(f"hf:{tmp_path / 'saved'}")[0]) == 4
  recs, r = data.open_source(f"hf:{tmp_path / 'saved'}:validation")
  assert [colour_id(r(i)) for i in recs] == [4, 5, 6]
  with pytest.raises(ValueError, match="splits .*'test'"):
    data.open_source(f"hf:{tmp_path / 'saved'}:test")
  with pytest.raises(ValueError, match="image_key: .*no column 'img'"):
    data.open_source(f"hf:{folder}", image_key="img")
  with pytest.raises(ValueError, match="does not exist"):
    data.open_source(f"hf:{tmp_path / 'missing'}")


def _epoch(source, host, hosts, n_local, *, state=None, take_n=None):
  """Colour ids this host's stream yields (batches of 1), optionally from a saved state."""
  cfg = data.DataConfig(source=source, resolution=8, seed=3)
  it = data.create_train_iterator(cfg, batch_size=1, process_index=host, process_count=hosts)
  if state is not None:
    it.set_state(state)
  ids = [colour_id(next(it)["image"][0]) for _ in range(take_n or n_local)]
  return ids, it.get_state()


@pytest.mark.parametrize("kind", ["wds", "hf"])
def test_two_hosts_see_each_image_once_per_epoch_and_resume(kind, tmp_path):
  if kind == "hf":
    pytest.importorskip("datasets")
    source = f"hf:{write_hf_parquet(tmp_path / 'pq', 11, files=3)}"
  else:
    write_wds_shards(tmp_path, [4, 4, 3])
    source = f"wds:{tmp_path}/shard-{{000000..000002}}.tar"
  seen = []
  for host, n_local in ((0, 6), (1, 5)):  # 11 records: host 0 gets 6, host 1 gets 5.
    ids, _ = _epoch(source, host, 2, n_local)
    assert len(set(ids)) == n_local, ids  # No image twice within the epoch.
    # Stopped after 2 images and resumed from the saved state: the same epoch, no repeats.
    head, state = _epoch(source, host, 2, n_local, take_n=2)
    tail, _ = _epoch(source, host, 2, n_local, state=state, take_n=n_local - 2)
    assert head + tail == ids
    seen += ids
  assert sorted(seen) == list(range(11))  # Together the hosts see every image exactly once.


def test_id_png_round_trip():
  assert colour_id(data.decode_image(id_png(300), "x")) == 300


@pytest.mark.slow  # ~30 s: two JAX processes over loopback.
def test_two_jax_processes_split_a_wds_epoch(tmp_path):
  """The real multi-host path: `jax.distributed` processes, each iterator on its default
  shard (`jax.process_index()`), a mid-epoch restart from the saved state."""
  write_wds_shards(tmp_path / "shards", [5, 4])
  source = f"wds:{tmp_path}/shards/shard-{{000000..000001}}.tar"
  port = free_port()
  procs = []
  for pid in range(2):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="",
               JAXTOK_COORDINATOR=f"127.0.0.1:{port}", JAXTOK_NUM_PROCESSES="2",
               JAXTOK_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen(
        [sys.executable, str(WORKER), source, str(tmp_path / f"ids{pid}.json")], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = wait_all(procs, timeout=300)
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  got = [json.loads((tmp_path / f"ids{pid}.json").read_text()) for pid in range(2)]
  assert [len(g["epoch"]) for g in got] == [5, 4]
  assert sorted(got[0]["epoch"] + got[1]["epoch"]) == list(range(9))
  for g in got:
    assert g["resumed"] == g["epoch"]
