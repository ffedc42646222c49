"""Fixtures for evaluator tests: a test double of the Tokenizer contract and smooth images."""
import pytest

from tests.eval.fakes import BlockTokenizer, make_smooth_images


@pytest.fixture
def fake_tokenizer():
  return BlockTokenizer()


@pytest.fixture
def images():
  return make_smooth_images()
