"""`unimm data check SOURCE`: counts, bad records with reasons, statistics, a sample grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from tests.data_formats import caption_records, write_llava
from tests.image_files import BAD_KINDS, every_good_kind
from unimm.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def dirty_folder(tmp_path):
    """An imagefolder with an image of every mode and shape, every bad kind, a missing file,
    an empty caption and a broken metadata line."""
    folder = tmp_path / "hf"
    folder.mkdir()
    rows = []
    good = every_good_kind(np.random.default_rng(0))
    for name, data in {**good, **{k: d for k, (d, _) in BAD_KINDS.items()}}.items():
        (folder / name).write_bytes(data)
        rows.append({"file_name": name, "caption": f"a picture called {name}"})
    rows += [{"file_name": "missing.png", "caption": "gone"},
             {"file_name": "rgb.png", "caption": "  "}]  # fmt: skip
    lines = [json.dumps(r) for r in rows] + ["{broken"]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder, len(good)


def test_check_counts_lists_bad_records_and_writes_a_grid(dirty_folder, tmp_path, capsys):
    folder, n_good = dirty_folder
    out = tmp_path / "check"
    code, printed, err = run(capsys, "data", "check", f"folder={folder}", "data.max_pixels=100000",
                             "data.resize=pad", "--out", str(out))  # fmt: skip
    assert code == 0, err
    n_bad = len(BAD_KINDS) + 3
    assert "imagefolder (metadata.jsonl, text column 'caption')" in printed
    assert f"records: {n_good + n_bad} ({n_good} good, {n_bad} bad)" in printed
    for name, (_, reason) in BAD_KINDS.items():  # each bad record named, with its reason
        assert f"({name}): {reason}" in printed, name
    assert "metadata.jsonl row 19 (missing.png): image not found" in printed
    assert "metadata.jsonl row 20 (rgb.png): missing text" in printed
    report = json.loads((out / "check.json").read_text())
    assert report["bad_by_reason"] == {
        "too small": 1, "unreadable image": 3, "too large": 2, "unsupported image mode": 1,
        "image not found": 1, "missing text": 1, "JSON": 1,
    }  # fmt: skip
    assert report["image_width"]["min"] == 12 and report["image_height"]["max"] == 90
    assert report["image_modes"]["I;16"] == 1 and report["images_upscaled"] == n_good
    assert report["text_words"]["min"] == report["text_words"]["max"] == 4
    grid = np.asarray(PILImage.open(out / "grid.png"))
    assert grid.shape == (2 + 3 * (128 + 2), 2 + 4 * (128 + 2), 3)  # 11 images, 4 a row, 2x
    assert "image height: min 20, median 30, mean 35.8, max 90" in printed


def test_check_reads_llava_and_limits(tmp_path, capsys):
    pairs = [(np.zeros((70, 90, 3), np.uint8), f"caption {k}") for k in range(5)]
    records, images = caption_records(pairs, "<image>\nDescribe it.")
    path = write_llava(tmp_path / "l" / "data.json", records, images)
    code, printed, _ = run(capsys, "data", "check", str(path), "--out", str(tmp_path / "o"),
                           "--limit", "3")  # fmt: skip
    assert code == 0
    assert "LLaVA conversations (data.json)" in printed and "records: 3 (3 good, 0 bad)" in printed
    assert "samples: vqa 3" in printed and "3 images have a side under 64 px" not in printed


def test_check_refuses_what_it_cannot_read(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "data", "check", f"folder={tmp_path / 'empty'}")
    assert code == 2 and "looked for samples.jsonl" in err
    code, _, err = run(capsys, "data", "check", "world")
    assert code == 2 and "nothing to check" in err
    code, _, err = run(capsys, "data", "check", str(tmp_path), "train.steps=3")
    assert code == 2 and "data.* overrides only" in err


def test_data_command_has_help(capsys):
    for argv in (["data", "--help"], ["data", "check", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "folder=PATH (format detected)" in capsys.readouterr().out
