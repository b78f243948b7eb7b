"""The pieces of benchmarks/new_user_trial.py (issue 19) on a handful of Animal-MNIST images:
the export reads back through unimm's own imagefolder reader, 28 x 28 grey brought to the
run's resolution by data.resize, and the independent classifier it judges generations with
recognises real images well above chance."""

from __future__ import annotations

import importlib.util
import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from unimm.data.check import check_source
from unimm.data.config import DataConfig
from unimm.data.decode import fit
from unimm.data.readers import BadSamples, build_source, open_records
from unimm.data.sample import Image, Text

if importlib.util.find_spec("animal_mnist") is None:
    pytest.skip(
        "animal-mnist not installed (make setup installs it: pip install --no-deps "
        "animal-mnist==0.4)",
        allow_module_level=True,
    )
pytest.importorskip("sklearn")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "new_user_trial.py"
_spec = importlib.util.spec_from_file_location("new_user_trial", SCRIPT)
trial = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trial)


@pytest.fixture(scope="module")
def animals():
    return trial.load_animal_mnist()


def test_the_data_is_what_the_trial_assumes(animals):
    images, labels = animals
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1000] * len(trial.CLASSES)
    train, heldout = trial.split(labels, 900, 100)
    assert len(train) == 9000 and len(heldout) == 1000 and not set(train) & set(heldout)
    assert np.bincount(labels[heldout]).tolist() == [100] * 10
    # CLASSES' order, from what the pictures show: zebras (9) have by far the most mid-grey
    # (striped) pixels, giraffes (6) the narrowest silhouettes
    x = images.astype(int)
    mid = [((x[labels == c] > 40) & (x[labels == c] < 215)).mean() for c in range(10)]
    width = [(x[labels == c] > 128).any(1).sum(1).mean() for c in range(10)]
    assert trial.CLASSES[int(np.argmax(mid))] == "zebra" and sorted(mid)[-1] > 2 * sorted(mid)[-2]
    assert trial.CLASSES[int(np.argmin(width))] == "giraffe"


def test_export_round_trips_through_the_imagefolder_reader(animals, tmp_path):
    images, labels = animals
    _, idx = trial.split(labels, 0, 3)  # 3 of each class
    folder = trial.export_imagefolder(images[idx], labels[idx], tmp_path / "train")
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and rows[0].keys() == {"file_name", "text", "label"}
    assert [r["label"] for r in rows] != [trial.CLASSES[c] for c in labels[idx]]  # shuffled
    records = open_records(f"folder={folder}", 64, BadSamples())  # detected as imagefolder
    assert records.n == 30 and records.kind.startswith("imagefolder")
    bad = BadSamples()
    both = {"t2i": 1.0, "caption": 1.0}
    in_order = DataConfig(shuffle=False)  # file order, to compare with the rows
    source = build_source({f"imagefolder={folder}": 1.0}, 0, 64, bad, both, in_order)
    samples = list(islice(source(0), 30))
    captions = [next(s.text for s in x.segments if isinstance(s, Text)) for x in samples]
    assert sorted(captions) == sorted(trial.CAPTION.format(c) for c in trial.CLASSES for _ in "abc")
    assert captions == [r["text"] for r in rows] and not bad
    pixels = np.stack([next(s.pixels for s in x.segments if isinstance(s, Image)) for x in samples])
    assert pixels.shape == (30, 64, 64, 3)  # 28 px, upscaled by data.resize
    colour = trial.colour_stats(pixels)
    assert colour["grey_share"] == 1.0 and colour["dark_share"] > 0.3  # white on black
    again, texts = trial.read_back(folder, 64, in_order)
    assert np.array_equal(again, pixels) and texts == captions
    r = check_source(f"folder={folder}", 64)
    assert (r["good"], r["bad"], r["images_upscaled"]) == (30, 0, 30)
    assert r["image_modes"] == {"L": 30}


def test_the_classifier_recognises_real_images(animals):
    images, labels = animals
    train, heldout = trial.split(labels, 20, 10, seed=1)
    clf = trial.fit_classifier(trial.to_classifier_input(images[train]), labels[train])
    raw = trial.accuracy(clf, trial.to_classifier_input(images[heldout]), labels[heldout])
    assert raw["accuracy"] >= 0.5  # chance 0.1
    # the way a generated image takes: 64 x 64 RGB (bicubic up, as data.resize) back to 28
    up = np.stack([np.asarray(fit(PILImage.fromarray(im).convert("RGB"), 64, "center_crop"))
                   for im in images[heldout]])  # fmt: skip
    round_trip = trial.accuracy(clf, trial.to_classifier_input(up), labels[heldout])
    assert abs(round_trip["accuracy"] - raw["accuracy"]) <= 0.05
    assert sum(map(sum, raw["confusion"])) == 100


def test_score_and_report_on_stand_in_generations(animals, tmp_path):
    """Real held-out images stand in for generations: recognised, grey, no copies."""
    images, labels = animals
    train, heldout = trial.split(labels, 20, 4, seed=2)
    train_x = trial.to_classifier_input(images[train])
    clf = trial.fit_classifier(train_x, labels[train])
    real, y = images[heldout], labels[heldout]
    rgb = np.repeat(real[..., None], 3, -1)
    tinted = rgb.copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 60, 0, 255)  # red cast
    heldout_views = {"real": (real, y), "real_at_resolution": (rgb, y)}
    r = trial.score(clf, train_x, heldout_views, rgb, y, rgb)
    assert r["classifier"]["generated"]["accuracy"] == r["classifier"]["real"]["accuracy"]
    assert r["verdict"]["colour_kept"] and r["colour"]["generated"]["grey_share"] == 1.0
    assert r["nearest_train_rms"]["generated"] > 10  # held-out images are no copies
    assert not trial.score(clf, train_x, heldout_views, tinted, y, rgb)["verdict"]["colour_kept"]
    r |= {"data": "test", "run": "none", "resolution": 28, "per_class": 4, "seed": 0,
          "sampling": {"cfg_scale": 5.0}}  # fmt: skip
    md = trial.markdown(r)
    assert "| zebra |" in md and "generated from the captions" in md
    trial.grid(rgb[::4], rgb, 4).save(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_train_command_parses_as_unimm_train(tmp_path):
    from unimm.cli import _parser
    from unimm.presets import get_run_config

    extra = ["chameleon.background_weight=1"]
    args = trial.train_args(tmp_path / "run", tmp_path / "data", "small", 420.0, extra)
    parsed = _parser().parse_args(args)
    assert (parsed.command, parsed.out, parsed.preset) == ("train", str(tmp_path / "run"), "small")
    cfg = get_run_config(parsed.preset, parsed.overrides)
    assert cfg.train.data == {f"imagefolder={tmp_path / 'data'}": 1.0}
    assert cfg.train.max_seconds == 420.0 and cfg.chameleon.background_weight == 1.0
