"""Tests of jaxtok.data.config: DataConfig's checks name the bad field."""
import pytest

from jaxtok import data


@pytest.mark.parametrize("field, value", [
    ("source", "imagenet"), ("eval_source", "folder:"), ("resolution", 0),
    ("resolution", True), ("num_eval_images", 0), ("crop_scale", (0.0, 1.0)),
    ("crop_scale", (0.8, 0.5)), ("color_jitter", 1.5), ("num_workers", -1),
    ("read_threads", 0), ("prefetch", 0)])
def test_validate_names_the_bad_field(field, value):
  data.DataConfig().validate()  # The defaults are valid (resolution None included).
  match = "source" if field.endswith("source") else field
  with pytest.raises(ValueError, match=match):
    data.DataConfig(**{field: value}).validate()


def test_check_resolution():
  assert data.check_resolution(32) == 32
  for bad in (0, -1, 2.0, None, False):
    with pytest.raises(ValueError, match="resolution"):
      data.check_resolution(bad)
