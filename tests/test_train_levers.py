"""Training levers of the quality work (docs/LOG.md, "Quality per CPU-minute"): the embedding
tables' own learning rate, and sampling from the moving average of the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unimm.checkpoint import load_tensors, save_tensors
from unimm.pipeline import load_checkpoint, train_run
from unimm.train.config import TrainConfig
from unimm.train.trainer import EMA_FILE, make_optimizer, set_lr


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.layers = nn.ModuleList([nn.Linear(6, 6)])
        self.out = nn.Linear(6, 10)

    def forward(self, ids):
        return self.out(self.layers[0](self.embed(ids))).logsumexp(-1).sum()


@pytest.mark.parametrize("optimizer", ["adamw", "muon"])
def test_every_parameter_is_in_one_group_and_embeddings_carry_their_scale(optimizer):
    model = Toy()
    opt = make_optimizer(model, TrainConfig(optimizer=optimizer, embed_lr_scale=7.0))
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scale[id(model.embed.weight)] == 7.0
    assert {scale[id(p)] for n, p in model.named_parameters() if n != "embed.weight"} == {1.0}
    if optimizer == "muon":  # the embedding is never a Muon matrix, whatever its scale
        muon = {id(p) for g in opt.param_groups if g.get("use_muon") for p in g["params"]}
        assert muon == {id(model.layers[0].weight)}


def test_embedding_rows_step_at_the_scaled_rate():
    # AdamW's first step moves every parameter with a non-zero gradient by lr * g / (|g| + eps),
    # i.e. by lr up to eps / |g|: the scaled group moves 5x as far as the rest.
    torch.manual_seed(0)
    model = Toy()
    cfg = TrainConfig(optimizer="adamw", lr=1e-2, embed_lr_scale=5.0, weight_decay=0.0)
    opt = make_optimizer(model, cfg)
    set_lr(opt, cfg.lr)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.tensor([[1, 2, 3]])).backward()
    opt.step()
    rows = model.embed.weight.grad.abs().sum(1) > 0
    moved = (model.embed.weight - before["embed.weight"]).abs()
    assert torch.allclose(moved[rows], torch.full_like(moved[rows], 5e-2), rtol=1e-4)
    assert torch.equal(moved[~rows], torch.zeros_like(moved[~rows]))  # unseen ids stay put
    step = (model.out.weight - before["out.weight"]).abs()
    assert torch.allclose(step, torch.full_like(step, 1e-2), rtol=1e-4)


def test_embed_lr_scale_must_be_positive():
    with pytest.raises(ValueError, match="embed_lr_scale"):
        TrainConfig(embed_lr_scale=0.0)


@pytest.fixture(scope="module")
def ema_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ema_run")
    overrides = [
        "vq_train.seconds=2",
        "train.steps=4",
        "train.ema_decay=0.5",
        "train.embed_lr_scale=3",
    ]
    train_run(out, "tiny", overrides, progress=False)
    return out


def test_ema_weights_replace_the_trained_ones(ema_run):
    final, _ = load_checkpoint(ema_run)
    averaged, run_dir = load_checkpoint(ema_run, ema=True)
    assert run_dir == ema_run
    ema = load_tensors(ema_run / EMA_FILE)
    own = averaged.state_dict()
    assert ema and all(torch.equal(own[k], v.to(own[k].dtype)) for k, v in ema.items())
    assert any(not torch.equal(final.state_dict()[k], own[k]) for k in ema)
    # what the average does not hold (frozen tokenizers, buffers) is the checkpoint's own
    rest = set(own) - set(ema)
    assert all(torch.equal(final.state_dict()[k], own[k]) for k in rest)


def test_ema_refuses_a_run_without_one_and_a_foreign_file(ema_run, tiny_run, tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        load_checkpoint(tiny_run, ema=True)
    ema = load_tensors(ema_run / EMA_FILE)
    name = next(iter(ema))
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "checkpoint").symlink_to(ema_run / "checkpoint")
    save_tensors({**ema, name: torch.zeros(3, 1)}, bad / EMA_FILE)
    with pytest.raises(ValueError, match="does not match"):
        load_checkpoint(bad, ema=True)


def test_generate_from_the_averaged_weights(ema_run, tmp_path):
    from unimm.cli import main

    out = tmp_path / "gen"
    assert (
        main(["generate", str(ema_run), "a red circle", "-n", "1", "--ema", "--out", str(out)]) == 0
    )
    assert len(list(out.glob("*.png"))) == 1


def test_vqa_questions_is_checked():
    assert TrainConfig(vqa_questions=5).vqa_questions == 5
    for bad in (0, 6):
        with pytest.raises(ValueError, match="vqa_questions"):
            TrainConfig(vqa_questions=bad)


def test_the_run_config_reaches_the_world_stream():
    from itertools import islice

    from unimm.data.readers import BadSamples
    from unimm.presets import get_run_config
    from unimm.train.run_data import RunData

    cfg = get_run_config("tiny", ["train.vqa_questions=4", "train.tasks=vqa:1"])
    samples = list(islice(RunData(cfg, BadSamples()).source(32)(0), 20))
    assert max(len(s.targets) for s in samples) == 4
    # the object curriculum counts steps of the global batch (tiny: 8 samples a step)
    cfg = get_run_config("tiny", ["train.object_curriculum_steps=10", "train.tasks=t2i:1"])
    samples = list(islice(RunData(cfg, BadSamples()).source(32)(0), 100))
    objects = [len(s.meta["scene"].objects) for s in samples]
    assert max(objects[:20]) == 1 and max(objects[80:]) == 4
    cfg = get_run_config("tiny", ["train.vqa_yes_no_twins=true", "train.tasks=vqa:1"])
    samples = list(islice(RunData(cfg, BadSamples()).source(32)(0), 40))
    assert any(s.meta["qtypes"].count("exists") == 2 for s in samples)
    cfg = get_run_config("tiny", ["train.vqa_where=true", "train.tasks=vqa:1"])
    samples = list(islice(RunData(cfg, BadSamples()).source(32)(0), 20))
    assert sum("where" in s.meta["qtypes"] for s in samples) >= 15

    # so does the yes/no curriculum, in samples of the global batch
    def questions(overrides: list[str]) -> list[list[str]]:
        cfg = get_run_config("tiny", ["train.vqa_questions=5", "train.tasks=vqa:1", *overrides])
        samples = islice(RunData(cfg, BadSamples()).source(32)(0), 120)
        return [[t.text for t in s.segments[1:]] for s in samples]

    ramped, plain = questions(["train.yes_no_curriculum_steps=10"]), questions([])
    assert ramped[:80] != plain[:80] and ramped[80:] == plain[80:]
    with pytest.raises(ValueError, match="object_curriculum_steps"):
        TrainConfig(object_curriculum_steps=-1)
    with pytest.raises(ValueError, match="yes_no_curriculum_steps"):
        TrainConfig(yes_no_curriculum_steps=-1)


def test_the_run_reports_the_steps_it_took_not_the_last_logged_one(tmp_path):
    import json

    # The clock stops training between two log rows.
    overrides = ["vq_train.seconds=1", "train.steps=100000", "train.max_seconds=1",
                 "train.log_every=100000"]  # fmt: skip
    train_run(tmp_path, "tiny", overrides, progress=False)
    record = json.loads((tmp_path / "trained_on.json").read_text())
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert record["parts"]["model"]["steps"] == state["step"] > 0
