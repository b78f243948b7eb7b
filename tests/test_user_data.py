"""Evaluation on the user's own data: PSNR / SSIM, exact match / token F1, and the
nearest-training-image memorisation check."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from tests.data_formats import write_imagefolder
from unimm.cli import main
from unimm.data.sample import Image, Sample, Text
from unimm.evaluate.user_data import (
    evaluate_user_data,
    exact_match,
    format_results,
    nearest_rms,
    psnr,
    split_items,
    ssim,
    token_f1,
)


def noise(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_psnr_and_ssim():
    a, b = noise(0), noise(1)
    assert psnr(a, a) > 90 and ssim(a, a) == pytest.approx(1.0)
    assert ssim(a, b) == pytest.approx(ssim(b, a)) and abs(ssim(a, b)) < 0.1
    smooth = np.repeat(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], 32, 0).repeat(3, 2)
    brighter = np.clip(smooth.astype(int) + 10, 0, 255).astype(np.uint8)
    assert 0.9 < ssim(smooth, brighter) < 1.0  # a small shift in brightness: structure kept
    assert psnr(smooth, brighter) == pytest.approx(10 * np.log10(255**2 / 100), abs=0.5)


def test_exact_match_and_token_f1_normalise_like_squad():
    assert exact_match("The cat.", "cat") == 1.0 and exact_match("a dog", "cat") == 0.0
    assert token_f1("a red circle", "red square") == pytest.approx(0.5)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_nearest_rms_finds_the_copy():
    pool = np.stack([noise(k) for k in range(5)])
    got = nearest_rms(np.stack([pool[3], np.clip(pool[1].astype(int) + 4, 0, 255)]), pool)
    assert got[0] == 0.0 and 0 < got[1] <= 4.0


def test_split_items_takes_pairs_and_vqa():
    im = noise(0)
    samples = [
        Sample([Text("cap"), Image(im)], (1,), "t2i"),
        Sample([Image(im), Text("cap2")], (1,), "caption"),
        Sample([Image(im), Text("q?"), Text("a")], (2,), "vqa"),
        Sample([Image(im), Text("x"), Image(im)], (2,), "edit"),  # not scored
    ]
    pairs, vqa = split_items(samples)
    assert [t for _, t in pairs] == ["cap", "cap2"] and [(q, a) for _, q, a in vqa] == [("q?", "a")]


@pytest.fixture
def held_out(tmp_path):
    pairs = [(noise(k, 64), f"noise picture {k}") for k in range(6)]
    return write_imagefolder(tmp_path / "val", pairs, "jsonl")


def test_evaluate_a_run_on_held_out_data(tiny_run, held_out, tmp_path):
    from unimm.pipeline import load_checkpoint

    model, _ = load_checkpoint(tiny_run)
    r = evaluate_user_data(model, f"folder={held_out}", n=6, pool=50, out=tmp_path / "e")
    assert (r["samples"], r["captioned_images"], r["vqa_questions"]) == (6, 6, 0)
    assert np.isfinite(r["reconstruction"]["psnr"]) and -1 <= r["reconstruction"]["ssim"] <= 1
    assert 0 <= r["caption"]["f1"] <= 1 and len(r["caption"]["examples"]) == 5
    g = r["generation"]
    assert g["pool"] == 50 and 0 <= g["near_copies"] <= 1 and g["nearest_train_rms"] > 0
    rt = g["retrieval"]
    assert 0 <= rt["own_caption_auc"] <= 1 and "image tokenizer" in rt["feature_space"]
    assert json.loads((tmp_path / "e" / "user_data.json").read_text())["captioned_images"] == 6
    assert "token F1" in format_results(r)

    # A model that hands back training images is caught by the memorisation check.
    from unimm.data import streams
    from unimm.data.readers import BadSamples, build_source

    t = model.parts.config.train
    source = build_source(t.data, t.seed, 64, BadSamples(), t.tasks)  # the run's own data
    train = list(islice(streams.images(source), 6))
    model.generate_images = lambda prompts, n, seed, sampling=None: [[im] for im in train]
    g = evaluate_user_data(model, f"folder={held_out}", n=6, pool=50)["generation"]
    assert g["near_copies"] == 1.0 and g["nearest_train_rms"] == 0.0 and g["nearest_ratio"] == 0

    # A model that draws each caption's own held-out image is retrieved perfectly.
    real = [noise(k, 64) for k in range(6)]
    model.generate_images = lambda prompts, n, seed, sampling=None: [
        [real[int(p.split()[-1])]] for p in prompts
    ]
    rt = evaluate_user_data(model, f"folder={held_out}", n=6, pool=50)["generation"]["retrieval"]
    assert rt["own_caption_auc"] == 1.0 and rt["top1"] == 1.0 and rt["pairs"] == 6


def test_own_caption_scores():
    import torch

    from unimm.evaluate.retrieval import own_caption_scores

    real = torch.eye(4)
    assert own_caption_scores(real, real, list("abcd"))["own_caption_auc"] == 1.0
    # every generation is nearest the next caption's image: own image beats the 2 others, loses
    # to that one
    shifted = 0.9 * torch.roll(real, 1, 0) + 0.3 * real
    r = own_caption_scores(shifted, real, list("abcd"))
    assert r["own_caption_auc"] == pytest.approx(2 / 3) and r["top1"] == 0.0
    # a rival with the same caption is no rival: generations 1 and 3 are nearest an image of
    # their own caption and now win outright (1.0), 0 and 2 still lose one of two (0.5)
    assert own_caption_scores(shifted, real, list("aabb"))["own_caption_auc"] == 0.75
    with pytest.raises(ValueError, match="same text"):
        own_caption_scores(real, real, list("aaaa"))


def test_eval_data_command(tiny_run, held_out, tmp_path, capsys):
    code = main(["eval-data", str(tiny_run), f"folder={held_out}", "-n", "3", "--pool", "20",
                 "--out", str(tmp_path / "o")])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "image tokenizer reconstruction: PSNR" in out and "near copies" in out
