"""Fixtures of the data tests: iterators closed after each test, a spy on bundled reads."""
import threading

import pytest

from jaxtok import data


@pytest.fixture(autouse=True)
def close_iterators(monkeypatch):
  """Closes every iterator a test made, so no prefetch thread outlives its test."""
  made = []
  create = data.create_train_iterator

  def tracked(*args, **kwargs):
    made.append(create(*args, **kwargs))
    return made[-1]

  monkeypatch.setattr(data, "create_train_iterator", tracked)
  yield
  for it in made:
    it.close()


class _Seen(list):
  """Names read; `clear()` also starts a new generation of readers."""
  generation = 0

  def clear(self):
    super().clear()
    self.generation += 1


@pytest.fixture
def spy_bundled(monkeypatch, close_iterators):
  """Records every bundled photo name read by readers made since the last `clear()`.

  Older readers are ignored: a closed grain iterator may still finish reads that its
  prefetch threads had started.
  """
  seen = _Seen()
  seen.generation = 1
  lock = threading.Lock()
  original = data.BundledReader.__call__

  def init(self):
    self.generation = seen.generation

  def spy(self, name):
    if getattr(self, "generation", 0) == seen.generation:
      with lock:
        seen.append(name)
    return original(self, name)

  monkeypatch.setattr(data.BundledReader, "__init__", init)
  monkeypatch.setattr(data.BundledReader, "__call__", spy)
  return seen
