"""Images of any size and mode -> the model's resolution (data.resize), bad files by reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.image_files import (
    BAD_KINDS,
    encode,
    every_good_kind,
    jpeg_with_orientation,
    png,
    png_rgb16,
)
from unimm.data.config import DataConfig
from unimm.data.decode import BadRecord, decode_image
from unimm.presets import get_run_config

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def banner() -> np.ndarray:
    """64 wide, 32 tall, red with blue 8-px ends: what each policy keeps of it shows."""
    x = np.zeros((32, 64, 3), np.uint8)
    x[:] = RED
    x[:, :8] = x[:, -8:] = BLUE
    return x


def is_colour(pixels: np.ndarray, colour, tol: int = 12) -> bool:
    return bool(np.abs(pixels.astype(int) - colour).max() <= tol)


def test_every_mode_and_shape_becomes_the_model_resolution():
    for name, data in every_good_kind(np.random.default_rng(0)).items():
        for resize in ("center_crop", "pad", "stretch"):
            pixels, info = decode_image(data, 32, DataConfig(resize=resize))
            assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8, name
            assert min(info.width, info.height) >= 12, name


def test_center_crop_pad_and_stretch_keep_what_they_say():
    data = png(banner())
    crop, _ = decode_image(data, 32, DataConfig(resize="center_crop"))
    assert is_colour(crop, RED)  # the middle 32 columns: the blue ends are cut off
    pad, _ = decode_image(data, 32, DataConfig(resize="pad"))
    assert is_colour(pad[:8], WHITE) and is_colour(pad[-8:], WHITE)  # white bars above, below
    assert is_colour(pad[12:20, :3], BLUE) and is_colour(pad[12:20, 14:18], RED)
    stretch, _ = decode_image(data, 32, DataConfig(resize="stretch"))
    assert is_colour(stretch[:, :3], BLUE) and is_colour(stretch[:, -3:], BLUE)
    assert is_colour(stretch[:, 14:18], RED)  # every row: no bars


def test_an_image_at_the_resolution_is_kept_pixel_for_pixel():
    x = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for resize in ("center_crop", "pad", "stretch"):
        assert np.array_equal(decode_image(png(x), 32, DataConfig(resize=resize))[0], x)


def test_modes_are_converted_as_documented():
    rng = np.random.default_rng(2)
    grey = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    got, info = decode_image(encode(PILImage.fromarray(grey)), 32)
    assert info.mode == "L" and all(np.array_equal(got[..., c], grey) for c in range(3))
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 1] = 200  # green, but fully transparent on the left half
    rgba[:, 16:, 3] = 255
    got, _ = decode_image(encode(PILImage.fromarray(rgba)), 32)
    assert is_colour(got[:, :16], WHITE, 0) and is_colour(got[:, 16:], (0, 200, 0), 0)
    grey16 = rng.integers(0, 65536, (32, 32), dtype=np.uint16)
    got, info = decode_image(encode(PILImage.fromarray(grey16)), 32)
    assert info.mode == "I;16"
    assert np.array_equal(got[..., 0], np.round(grey16 / 257).astype(np.uint8))
    rgb16 = rng.integers(0, 65536, (32, 32, 3), dtype=np.uint16)
    got, _ = decode_image(png_rgb16(rgb16), 32)  # 48-bit colour: the high byte, within 1
    assert np.abs(got.astype(int) - (rgb16 >> 8)).max() <= 1


def test_exif_orientation_turns_a_jpeg_upright():
    x = np.full((16, 32, 3), 255, np.uint8)
    x[:8] = 0  # stored: dark top half
    # Orientation 6: shown turned 90 degrees clockwise, so the stored top is on the right.
    got, info = decode_image(jpeg_with_orientation(x, 6), 16, DataConfig(resize="stretch"))
    assert (info.width, info.height) == (16, 32)
    assert got[:, 12:].mean() < 40 and got[:, :4].mean() > 215


@pytest.mark.parametrize("name", sorted(BAD_KINDS))
def test_every_bad_kind_is_refused_with_its_reason(name):
    data, reason = BAD_KINDS[name]
    with pytest.raises(BadRecord) as e:
        decode_image(data, 32, DataConfig(max_pixels=100_000))
    assert e.value.reason == reason
    with pytest.raises(BadRecord, match="image not found"):
        decode_image("/nonexistent/x.png", 32)


def test_data_config_is_part_of_the_run_config():
    cfg = get_run_config("tiny", ["data.resize=pad", "data.text_column=label"])
    assert cfg.data.resize == "pad" and cfg.data.text_column == "label"
    assert get_run_config("tiny").data.resize == "center_crop"
    with pytest.raises(ValueError, match="resize"):
        get_run_config("tiny", ["data.resize=squash"])


def test_a_lone_source_weighs_one_and_names_mix_with_weights():
    # Issue 19: `train.data=wds=shard-000.tar` failed with "train.data must be a mapping".
    assert get_run_config("tiny", ["train.data=wds=shard-000.tar"]).train.data == {
        "wds=shard-000.tar": 1.0
    }
    got = get_run_config("tiny", ["train.data=world:0.25,folder=/data/pets"]).train.data
    assert got == {"world": 0.25, "folder=/data/pets": 1.0}
    assert get_run_config("tiny", ["train.tasks=caption"]).train.tasks == {"caption": 1.0}
