"""The tokenization CLI in subprocesses: 8 devices, 2 processes, and kill -9 then resume."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import jaxtok
from jaxtok import data as data_lib
from jaxtok import tokenize
from tests.processes import free_port, wait_all
from tests.tokenize.common import ROOT, cli_args, cli_env, photo_folder, run_cli, summary_of

KILL_WORKER = Path(__file__).with_name("kill_worker.py")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(folder, its file names, tok.encode ids of its images) for 11 photos."""
  root = tmp_path_factory.mktemp("photos")
  names = photo_folder(root, 11)
  tok = jaxtok.load("titok:smoke")
  return root, names, tok.encode(data_lib.eval_images(f"folder:{root}", tok.image_size))


def _check_exactly_once(out: Path, names, ref_ids) -> tokenize.TokenShards:
  ds = tokenize.read(out, verify=True)
  examples = sorted((ds[i] for i in range(len(ds))), key=lambda e: e["index"])
  assert len(ds) == len(names)
  assert [e["index"] for e in examples] == list(range(len(names)))  # Each once, none lost.
  assert [e["image_id"] for e in examples] == names
  np.testing.assert_array_equal(np.stack([e["ids"] for e in examples]), ref_ids)
  return ds


@pytest.mark.slow  # Moved from the default suite to keep README's time (issue 28).
def test_cli_shards_over_8_devices(reference, tmp_path):
  root, names, ref = reference
  summary = run_cli(cli_args(root, tmp_path / "out", batch_size=8, shard_size=4), cli_env(8))
  assert summary["devices"] == 8 and summary["num_hosts"] == 1
  assert (summary["images"], summary["num_shards"], summary["complete"]) == (11, 3, True)
  assert summary["images_per_s"] > 0
  _check_exactly_once(tmp_path / "out", names, ref)


@pytest.mark.slow  # Two jax processes over gloo: ~20 s on 2 loaded cores.
def test_two_processes_union_is_the_dataset_once(reference, tmp_path):
  root, names, ref = reference
  port = free_port()
  procs = []
  for pid in range(2):
    env = cli_env(2, JAXTOK_COORDINATOR=f"127.0.0.1:{port}", JAXTOK_NUM_PROCESSES="2",
                  JAXTOK_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxtok.tokenize",
         *cli_args(root, tmp_path / "out", batch_size=2, shard_size=2)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = wait_all(procs, timeout=300)
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]
  summaries = [summary_of(log) for log in logs]
  assert [(s["host"], s["num_hosts"], s["devices"]) for s in summaries] == [(0, 2, 2),
                                                                            (1, 2, 2)]
  assert [s["images"] for s in summaries] == [6, 5]  # Host h: records h, h + 2, ...
  ds = _check_exactly_once(tmp_path / "out", names, ref)
  assert sorted(ds.manifests) == [0, 1]
  host1 = sorted(ds[i]["index"] for i in range(len(ds)) if ds[i]["index"] % 2)
  assert host1 == [1, 3, 5, 7, 9]


@pytest.mark.slow  # Two CLI runs: ~15 s.
def test_resume_after_kill_9(reference, tmp_path):
  root, names, ref = reference
  out = tmp_path / "out"
  host = out / "host-00000-of-00001"
  args = cli_args(root, out, batch_size=2, shard_size=3)
  proc = subprocess.Popen([sys.executable, str(KILL_WORKER), *args], cwd=ROOT, env=cli_env(2),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    deadline = time.monotonic() + 240
    while True:  # Until the first shard is listed and the second waits, written, in its temp.
      assert proc.poll() is None, proc.stdout.read()[-3000:]
      assert time.monotonic() < deadline, "the worker never reached its second shard"
      manifest = host / "manifest.json"
      listed = json.loads(manifest.read_text())["shards"] if manifest.exists() else {}
      temps = list(host.glob(".shard-*.tmp-*")) if host.exists() else []
      if len(listed) == 1 and temps:
        break
      time.sleep(0.05)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  # The half-written shard does not count: the directory is incomplete, with one shard.
  with pytest.raises(ValueError, match="not complete"):
    tokenize.read(out)
  partial = tokenize.read(out, allow_partial=True)
  assert sorted(partial[i]["index"] for i in range(len(partial))) == [0, 1, 2]
  first = (host / "shard-00000-of-00004.array_record").read_bytes()

  summary = run_cli(args, cli_env(2))  # The same command line resumes.
  assert (summary["shards_skipped"], summary["shards_written"], summary["images"]) == (1, 3, 8)
  assert not list(host.glob(".*tmp*"))
  assert (host / "shard-00000-of-00004.array_record").read_bytes() == first  # Kept as it was.
  _check_exactly_once(out, names, ref)
