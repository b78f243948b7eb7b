"""The CLI as a user meets it: help, the happy path on a tiny run, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image as PILImage

from unimm.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize(
    "cmd",
    [
        "quickstart",
        "train",
        "eval",
        "eval-spread",
        "eval-data",
        "compare",
        "data",
        "generate",
        "chat",
        "inpaint",
        "edit",
        "interleave",
        "world",
    ],
)
def test_every_command_has_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: unimm" in capsys.readouterr().out


def test_config_prints_json_and_rejects_bad_keys(capsys):
    code, out, _ = run(capsys, "config", "--preset", "tiny", "train.steps=5")
    assert code == 0 and json.loads(out)["train"]["steps"] == 5
    code, _, err = run(capsys, "config", "--preset", "tiny", "train.stepz=5")
    assert code == 2 and "unknown config key 'train.stepz'" in err
    code, _, err = run(capsys, "config", "--preset", "galactic")
    assert code == 2 and "unknown preset 'galactic'" in err


def test_sampling_flags_reach_the_sampling_config():
    from unimm.cli import _parser, _sampling

    args = _parser().parse_args(
        ["chat", "ckpt", "--steps", "8", "--text-blocks", "2", "--cfg", "2"]
    )
    s = _sampling(args)
    assert (s.steps, s.text_blocks, s.cfg_scale) == (8, 2, 2.0)
    assert _sampling(_parser().parse_args(["generate", "ckpt", "x"])).text_blocks is None


def test_flag_with_wrong_type_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "ckpt", "a circle", "-n", "many"])
    assert e.value.code == 2
    assert "invalid _positive_int value" in capsys.readouterr().err


def test_generate_and_chat_on_a_tiny_run(tiny_run, tmp_path, capsys):
    code, out, err = run(
        capsys, "generate", str(tiny_run), "a red circle", "-n", "2", "--out", str(tmp_path)
    )
    assert code == 0, err
    paths = out.split()
    assert len(paths) == 2
    img = np.asarray(PILImage.open(paths[0]))
    assert img.shape == (64, 64, 3)
    code, out, err = run(capsys, "chat", str(tiny_run), "--image", paths[0], "-q", "what shape?")
    assert code == 0, err
    code, out, err = run(capsys, "chat", str(tiny_run), "--image", paths[0])
    assert code == 0, err
    # One-shot with several images: one user turn holding both, then the question.
    two = ["--image", paths[0], "--image", paths[1]]
    code, out, err = run(capsys, "chat", str(tiny_run), *two, "-q", "which has more circles?")
    assert code == 0, err
    code, _, err = run(capsys, "chat", str(tiny_run), *two)
    assert code == 2 and "2 images need a question" in err
    code, _, err = run(capsys, "chat", str(tiny_run), *two, "--image", paths[0], "-q", "why?")
    assert code == 2 and "too many images: the prompt holds 3" in err  # the tiny context fits 2


def test_bad_inputs_give_one_clear_line(tiny_run, tmp_path, capsys):
    code, _, err = run(capsys, "generate", str(tmp_path / "nowhere"), "a circle")
    assert code == 2 and "checkpoint directory not found" in err
    code, _, err = run(capsys, "generate", str(tiny_run), "   ")
    assert code == 2 and "empty prompt" in err
    code, _, err = run(capsys, "generate", str(tiny_run), "a circle " * 200)
    assert code == 2 and "prompt too long" in err

    small = tmp_path / "small.png"
    PILImage.fromarray(np.zeros((32, 32, 3), np.uint8)).save(small)
    code, _, err = run(capsys, "chat", str(tiny_run), "--image", str(small))
    assert code == 2 and "64x64" in err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    code, _, err = run(capsys, "chat", str(tiny_run), "--image", str(junk))
    assert code == 2 and "not a readable image" in err
    code, _, err = run(capsys, "chat", str(tiny_run), "--image", str(small), "-q", " ")
    assert code == 2 and "empty question" in err
    for e in (err,):
        assert len(e.strip().splitlines()) == 1


def test_corrupt_checkpoint_is_reported_and_left_alone(tiny_run, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_run / "checkpoint", broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    code, _, err = run(capsys, "generate", str(broken), "a circle")
    assert code == 2 and "corrupt weights file" in err
    (broken / "config.json").write_text("{")
    code, _, err = run(capsys, "generate", str(broken), "a circle")
    assert code == 2 and "corrupt JSON" in err
    assert (broken / "config.json").read_text() == "{"


def test_world_export(tmp_path, capsys):
    out = tmp_path / "world"
    code, _, err = run(capsys, "world", "--out", str(out), "-n", "12")
    assert code == 0, err
    lines = (out / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 12
    assert list(out.glob("**/*.png"))


def test_eval_writes_report(tiny_run, tmp_path, capsys, monkeypatch):
    from unimm.recipes.chameleon import ChameleonModel

    texts = []  # the sampling of every text generation the evaluation asks for
    generate = ChameleonModel.generate

    def recording(self, prompts, modality, sampling=None, seed=0):
        if modality == "text":
            texts.append(sampling)
        return generate(self, prompts, modality, sampling, seed)

    monkeypatch.setattr(ChameleonModel, "generate", recording)
    out = tmp_path / "report"
    code, stdout, err = run(
        capsys,
        "eval",
        str(tiny_run),
        "--out",
        str(out),
        "--per-task",
        "2",
        "--images-per-prompt",
        "1",
        "--questions",
        "6",
        "--captions",
        "3",
        "--cfg",
        "3",
        "--standard-cfg",
        "--steps",
        "3",
        "--text-blocks",
        "2",
    )
    assert code == 0, err
    assert "GenEval-scene in-distribution" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"geneval_in", "geneval_heldout", "vqa_eval", "vqa_heldout", "caption_eval"} <= set(
        metrics
    )
    assert 0.0 <= metrics["geneval_in"]["overall"] <= 1.0
    # The guidance the report was made with (BENCHMARKS.md's equal-budget command sets it).
    assert metrics["sampling"]["cfg_scale"] == 3.0
    assert metrics["sampling"]["cfg_keep_background"] is False
    # Understanding stays greedy and gets the iterative samplers' steps and blocks (MMaDA text).
    assert texts and all((s.temperature, s.steps, s.text_blocks) == (0.0, 3, 2) for s in texts)
    report = (out / "report.md").read_text()
    assert "GenEval-scene" in report and (out / "loss.png").exists()
    assert list(out.glob("geneval_in_*.png"))


def test_inpaint_on_a_showo_run_and_refused_by_chameleon(tiny_run, tmp_path, capsys):
    from unimm.pipeline import train_run

    run_dir = tmp_path / "showo"
    steps = ["recipe=showo", "vq_train.seconds=2", "train.steps=3", "diffusion.image_steps=3"]
    train_run(run_dir, "tiny", steps, progress=False)
    image = tmp_path / "in.png"
    PILImage.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(image)
    out = tmp_path / "out.png"
    argv = ["inpaint", str(run_dir), str(image), "a red circle", "--box", "0", "0", "32", "32"]
    code, stdout, err = run(capsys, *argv, "-o", str(out), "--steps", "2")
    assert code == 0, err
    assert np.asarray(PILImage.open(out)).shape == (64, 64, 3)
    code, _, err = run(capsys, "inpaint", str(tiny_run), *argv[2:], "-o", str(out))
    assert code == 2 and "'chameleon' recipe cannot inpaint" in err
    code, _, err = run(capsys, *argv[:5], "40", "0", "32", "32", "-o", str(out))
    assert code == 2 and "box" in err


def test_edit_interleave_and_interactive_chat(tiny_run, tmp_path, capsys, monkeypatch):
    from unimm.world.render import render
    from unimm.world.scene import Obj, Scene

    image = tmp_path / "scene.png"
    PILImage.fromarray(render(Scene((Obj("circle", "red", 30, 30, 14),)))).save(image)
    out = tmp_path / "edited.png"
    base = ["edit", str(image), "--checkpoint", str(tiny_run), "-o", str(out)]
    code, stdout, err = run(capsys, *base[:2], "make the circle green", *base[2:])
    assert code == 0, err
    assert "never trained on 'edit'" in err  # the tiny run's mixture is t2i/caption/VQA
    assert np.asarray(PILImage.open(out)).shape == (64, 64, 3)
    code, _, err = run(capsys, *base[:2], "remove the blue square", *base[2:])
    assert code == 2 and "no blue square" in err
    request = "draw a red square, then add a blue circle, then tell me how many circles there are"
    folder = tmp_path / "inter"
    code, stdout, err = run(capsys, "interleave", str(tiny_run), request, "--out", str(folder))
    assert code == 0, err
    lines = stdout.strip().splitlines()
    assert len(lines) == 3 and lines[2].startswith("[3] how many circles are there? ->")
    assert len(list(folder.glob("*.png"))) == 2
    bad = "draw a red square, then remove the blue circle"
    refused = tmp_path / "refused"
    code, stdout, err = run(capsys, "interleave", str(tiny_run), bad, "--out", str(refused))
    assert code == 2 and stdout == "" and not refused.exists()
    assert err.strip() == (
        "unimm interleave: error: step 2: there is no blue circle to remove "
        "(the scene so far: a red square)"
    )
    code, _, err = run(
        capsys, "interleave", str(tiny_run), bad, "--out", str(refused), "--no-check"
    )
    assert code == 0, err
    assert len(list(refused.glob("*.png"))) == 2
    # a starting image is read by the detector, as `unimm edit` reads it
    start = ["interleave", str(tiny_run), "--image", str(image), "--out", str(tmp_path / "s")]
    code, _, err = run(capsys, *start, "remove the square, then how many circles?")
    assert code == 2 and "step 1: there is no square to remove" in err
    code, stdout, err = run(capsys, *start, "make the square sparkle, then how many squares?")
    assert code == 0, err  # not a world edit, so not refused though there is no square
    assert len(stdout.strip().splitlines()) == 2
    inputs = iter(
        [
            f"/image {image}",
            "what color is the circle?",
            "/draw a red circle",
            "/image nowhere.png",
            "/bogus",
            "/quit",
        ]
    )
    monkeypatch.setattr("builtins.input", lambda prompt="": next(inputs))
    code, stdout, err = run(capsys, "chat", str(tiny_run), "--out", str(tmp_path / "drawn"))
    assert code == 0, err
    assert stdout.count("model> ") == 2 and "image saved to" in stdout
    assert "error:" in stdout and "unknown command /bogus" in stdout
    assert (tmp_path / "drawn" / "chat_0.png").is_file()


def test_finetune_may_lengthen_the_context(tiny_run, tmp_path, capsys):
    from unimm.data.sample import Image, Text
    from unimm.recipes.base import SamplingConfig
    from unimm.recipes.registry import load_model

    start = load_model(tiny_run / "checkpoint")
    longer = start.parts.config.model.max_seq_len + 2 * (start.image_tokens + 2)
    code, _, err = run(
        capsys,
        "finetune",
        "--init",
        str(tiny_run),
        "--out",
        str(tmp_path / "ft"),
        "train.steps=1",
        "train.batch_size=2",
        f"model.max_seq_len={longer}",
    )
    assert code == 0, err
    tuned = load_model(tmp_path / "ft" / "checkpoint")
    assert tuned.parts.config.model.max_seq_len == longer
    assert tuned.backbone.config.max_seq_len == longer  # the KV cache's size follows
    # Rotary positions: the weights are the same tensors, only the limit moved.
    assert tuned.max_prompt_images("text") == start.max_prompt_images("text") + 2
    white = np.full((64, 64, 3), 255, np.uint8)
    prompt = [Image(white)] * tuned.max_prompt_images("text") + [Text("how many circles?")]
    tuned.generate([prompt], "text", SamplingConfig(temperature=0.0, max_new_tokens=2))
    with pytest.raises(ValueError, match="too many images"):
        start.generate([prompt], "text", SamplingConfig(temperature=0.0, max_new_tokens=2))
