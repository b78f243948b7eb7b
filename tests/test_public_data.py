"""A small public data set that a registry package ships (no download): scikit-learn's
handwritten digits (8x8 grey, labelled: captions and VQA) and its two sample photographs
(427x640 JPEGs), written in every format and read back through the readers."""

from __future__ import annotations

from itertools import islice

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.data_formats import write_every_format, write_imagefolder
from unimm.data.check import check_source
from unimm.data.config import DataConfig
from unimm.data.decode import decode_image
from unimm.data.readers import BadSamples, build_source
from unimm.data.sample import Image, Text

datasets = pytest.importorskip("sklearn.datasets")
N_DIGITS = 12


def digits() -> list[tuple[bytes, str]]:
    """Digits as dark ink on white PNGs (mode L), captioned by their label."""
    d = datasets.load_digits()
    out = []
    for image, label in zip(d.images[:N_DIGITS], d.target[:N_DIGITS]):
        ink = (255 - image * 255 / 16).round().astype(np.uint8)  # 0..16 ink -> white paper
        out.append((_png(PILImage.fromarray(ink)), f"a handwritten digit {label}"))
    return out


def photos() -> list[tuple[bytes, str]]:
    from pathlib import Path

    files = datasets.load_sample_images().filenames  # shipped in the package: china, flower
    return [(Path(f).read_bytes(), f"a photograph: {Path(f).stem}") for f in sorted(files)]


def _png(im: PILImage.Image) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def pairs_of(sample) -> tuple[np.ndarray, str]:
    (image,) = [s.pixels for s in sample.segments if isinstance(s, Image)]
    (text,) = [s.text for s in sample.segments if isinstance(s, Text)]
    return image, text


@pytest.mark.parametrize("resize", ["center_crop", "pad"])
def test_sklearn_digits_and_photos_round_trip_in_every_format(tmp_path, resize):
    items = digits() + photos()
    cfg = DataConfig(resize=resize)
    want = [(decode_image(data, 32, cfg)[0], text) for data, text in items]
    digit = want[0][0]  # grey stays grey; an 8x8 digit fills the square either way
    assert np.array_equal(digit[..., 0], digit[..., 2]) and digit.mean() > 100
    photo = want[-1][0]  # 427x640: cropped, or padded with white bands above and below
    assert (photo[:3] == 255).all() == (resize == "pad")
    for entry, what in write_every_format(tmp_path, items).items():
        bad = BadSamples()
        got = list(islice(build_source({entry: 1.0}, 0, 32, bad, data=cfg)(0), len(items)))
        # the first epoch holds every record once (file sources in a shuffled order)
        key = lambda pair: (pair[1], pair[0].tobytes())  # noqa: E731
        got_pairs = sorted(map(pairs_of, got), key=key)
        for (image, text), (w_image, w_text) in zip(got_pairs, sorted(want, key=key), strict=True):
            assert text == w_text and np.array_equal(image, w_image), what
        assert not bad, what


def test_check_describes_the_public_data(tmp_path):
    folder = write_imagefolder(tmp_path / "hf", digits() + photos(), "csv", "caption")
    r = check_source(f"folder={folder}", 64, out=tmp_path / "check")
    assert (r["records"], r["good"], r["bad"]) == (N_DIGITS + 2, N_DIGITS + 2, 0)
    assert r["image_modes"] == {"L": N_DIGITS, "RGB": 2}
    assert r["image_width"]["min"] == 8 and r["image_width"]["max"] == 640
    assert r["images_upscaled"] == N_DIGITS  # 8 px digits, but not the 427 px photos
    assert (tmp_path / "check" / "grid.png").is_file()
