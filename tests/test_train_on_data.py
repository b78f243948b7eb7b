"""Every part that learns from images or text trains on `train.data`, never silently on the
world: with the world's scene sampler and renderer poisoned, whole runs on user data still
train (text BPE, VQ or VAE or pixel patches, semantic encoder, model), and `unimm train` says
what each part trained on."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

from tests.data_formats import caption_records, write_imagefolder, write_llava, write_wds
from unimm.data.streams import describe, texts
from unimm.pipeline import finetune_run, train_run
from unimm.train.provenance import FILE

FAST = ["train.steps=2", "vq_train.seconds=1", "semantic_train.seconds=1", "train.log_every=1"]


def pairs_of(n: int, size: int = 48):
    """Stripes of one colour at a random angle, captioned by colour: not world scenes."""
    rng = np.random.default_rng(0)
    colours = {"orange": (255, 140, 0), "purple": (128, 0, 128), "teal": (0, 128, 128)}
    out = []
    for k in range(n):
        name = list(colours)[k % 3]
        x = np.full((size, size, 3), 255, np.uint8)
        x[rng.integers(0, 2, (size, size)).astype(bool)] = colours[name]
        out.append((x, f"{name} noise number {k}"))
    return out


@pytest.fixture
def no_world(monkeypatch):
    """Any use of the world's scene sampler or renderer fails the test."""
    import importlib

    def poisoned(*args, **kwargs):
        raise AssertionError("the built-in world was used")

    scene, render = (importlib.import_module(f"unimm.world.{m}") for m in ("scene", "render"))
    originals = {scene.sample_scene, render.render}
    for module in [m for name, m in sys.modules.items() if name.startswith("unimm")]:
        for attr, value in list(vars(module).items()):
            if any(value is f for f in originals):
                monkeypatch.setattr(module, attr, poisoned)


def trained_on(run) -> dict:
    return json.loads((run / FILE).read_text())


def test_a_run_on_an_imagefolder_never_touches_the_world(tmp_path, no_world, capsys):
    from unimm.train.tokenizer_trainer import render_batch
    from unimm.world.tasks import world_samples

    with pytest.raises(AssertionError, match="world was used"):  # the poison works
        next(world_samples("train", 0))
    with pytest.raises(AssertionError, match="world was used"):
        render_batch(random.Random(0), 1, 64)
    pairs = pairs_of(12)
    pairs[1] = (pairs[1][0], "a caption far too long for the model " * 40)
    folder = write_imagefolder(tmp_path / "pets", pairs, "csv", "caption")
    run = tmp_path / "run"
    train_run(run, "tiny", [*FAST, f"train.data=folder={folder}"], progress=False)
    # A sample longer than model.max_seq_len is skipped and counted, not a crash.
    bad = json.loads((run / "bad_samples_rank0.json").read_text())
    assert bad == {"too long for model.max_seq_len": 2}  # 16 samples: read in both epochs
    record = trained_on(run)
    assert not record["mixes_world"] and record["in_words"].startswith("your data")
    parts = record["parts"]
    assert set(parts) == {"text tokenizer", "image tokenizer", "model"}
    assert all(p["source"] == record["in_words"] for p in parts.values())
    assert parts["text tokenizer"]["texts"] == 12  # one epoch of the captions
    assert parts["image tokenizer"]["images"] > 0 and parts["model"]["steps"] == 2
    vq = json.loads((run / "image_tokenizer" / "metrics.json").read_text())
    assert vq["data"] == "given" and vq["n"] == 256 and np.isfinite(vq["psnr"])
    printed = capsys.readouterr().out
    for line in ("data: your data (folder=", "text tokenizer: 12 texts of your data",
                 "image tokenizer: ", "model: 2 steps, 16 samples of your data"):  # fmt: skip
        assert line in printed, line


def test_janus_on_llava_data_trains_its_semantic_encoder_on_it(tmp_path, no_world):
    records, images = caption_records(pairs_of(9, 64), "<image>\nWhat is this?")
    path = write_llava(tmp_path / "llava" / "chat.json", records, images)
    run = tmp_path / "run"
    overrides = [*FAST, "recipe=janus", f"train.data=llava={path}", "semantic_train.batch_size=4"]
    train_run(run, "tiny", overrides, progress=False)
    parts = trained_on(run)["parts"]
    assert parts["semantic encoder"]["pairs"] > 0
    sem = json.loads((run / "semantic_encoder" / "metrics.json").read_text())
    assert sem["data"] == "given" and "shape_probe" not in sem
    assert sem["retrieval"]["n"] == 200  # pools of the data's own pairs


@pytest.mark.parametrize("tokenizer", ["vae", "pixels"])
def test_continuous_tokenizers_fit_on_the_data(tmp_path, no_world, tokenizer):
    shards = write_wds(tmp_path / "s" / "shard-000.tar", pairs_of(8))
    run = tmp_path / "run"
    overrides = [*FAST, "recipe=transfusion", f"continuous_tokenizer={tokenizer}",
                 f"train.data=wds={shards}", "data.resize=pad"]  # fmt: skip
    train_run(run, "tiny", overrides, progress=False)
    assert trained_on(run)["parts"]["model"]["steps"] == 2


def test_a_mix_of_world_and_user_data_says_so(tmp_path, capsys):
    folder = write_imagefolder(tmp_path / "f", pairs_of(6), "jsonl")
    spec = {"world": 1.0, f"folder={folder}": 3.0}
    assert describe(spec) == f"a mix of the built-in scene world and your data (world 25 %, " \
                             f"folder={folder} 75 %)"  # fmt: skip
    corpus = texts(spec, 40, 0, 64)
    assert sum("noise number" in t for t in corpus) == 6  # its share (30) capped at one epoch
    run = tmp_path / "run"
    train_run(run, "tiny", [*FAST, "train.data=world:1,folder=" + str(folder) + ":3"],
              progress=False)  # fmt: skip
    assert trained_on(run)["mixes_world"]
    assert "note: the built-in scene world is part of this run's data" in capsys.readouterr().out


def test_the_world_alone_is_said_too(tiny_run):
    record = trained_on(tiny_run)
    assert record["in_words"] == "the built-in scene world" and not record["mixes_world"]
    assert record["parts"]["text tokenizer"]["texts"] > 20_000  # every world task's texts


def test_finetune_reads_train_data(tmp_path, tiny_run, no_world):
    folder = write_imagefolder(tmp_path / "f", pairs_of(6, 64), "jsonl")
    finetune_run(tiny_run, tmp_path / "ft", ["train.steps=1", f"train.data=folder={folder}"],
                 progress=False)  # fmt: skip
    assert (tmp_path / "ft" / "checkpoint").is_dir()


def test_semantic_codes_align_with_the_data_captions(tmp_path, no_world):
    folder = write_imagefolder(tmp_path / "f", pairs_of(8, 64), "jsonl")
    run = tmp_path / "run"
    overrides = [*FAST, "vq_train.align_weight=0.01", f"train.data=folder={folder}"]
    train_run(run, "tiny", overrides, progress=False)
    vq = json.loads((run / "image_tokenizer" / "metrics.json").read_text())
    assert vq["data"] == "given" and np.isfinite(vq["final_align_loss"])
