import numpy as np
import pytest
from PIL import Image as PILImage

from unimm.data.images import load_image, to_tensor, to_uint8


def test_tensor_round_trip_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_tensor(list(x))), x)


def test_modes(tmp_path):
    grey = tmp_path / "g.png"
    PILImage.fromarray(np.full((4, 4), 7, np.uint8)).save(grey)
    assert load_image(grey, 4).tolist() == np.full((4, 4, 3), 7).tolist()
    rgba = np.zeros((4, 4, 4), np.uint8)  # fully transparent -> white background
    PILImage.fromarray(rgba).save(tmp_path / "a.png")
    assert (load_image(tmp_path / "a.png") == 255).all()
    PILImage.fromarray(np.zeros((4, 4), np.float32), mode="F").save(tmp_path / "f.tiff")
    with pytest.raises(ValueError, match="mode F"):
        load_image(tmp_path / "f.tiff")


def test_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_image(tmp_path / "missing.png")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    PILImage.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / "r.png")
    with pytest.raises(ValueError, match="6x8; this model takes 64x64"):
        load_image(tmp_path / "r.png", 64)
