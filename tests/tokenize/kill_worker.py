"""`python -m jaxtok.tokenize` with every shard after the first held back before its commit.

Spawned by test_cli.py's kill -9 test: the first shard is committed normally; the next one is
fully written to its temp file and then the process sleeps before renaming it, so the test can
kill it at a moment where one shard is complete and another is half-way to disk.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__)))))

from jaxtok.tokenize import __main__ as cli
from jaxtok.tokenize import writer

_real_commit = writer._commit_shard
_commits = []


def _held_commit(tmp, final):
  if _commits:
    print(f"holding {final.name}", flush=True)
    time.sleep(600)
  _real_commit(tmp, final)
  _commits.append(final.name)


writer._commit_shard = _held_commit

if __name__ == "__main__":
  cli.main(sys.argv[1:])
