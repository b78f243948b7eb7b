"""The GPU path, tested on the CPU: device resolution, and every recipe trained and sampled with
its weights on another device (tests/shadow_device.py: real values, CUDA's placement rules), so
a batch built on the CPU next to device weights fails here as it would on a GPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests import (
    test_ddit,
    test_diffusion_head,
    test_discrete_diffusion_recipes,
    test_janus,
    test_janusflow,
    test_transfusion,
)
from tests.shadow_device import SHADOW, DeviceMismatch, ShadowDevice, on_shadow
from tests.train_helpers import stream, tiny_model, tiny_train_config
from unimm.data.sample import Image, Text
from unimm.recipes.base import SamplingConfig
from unimm.train import distributed as du
from unimm.train import state as st
from unimm.train.trainer import train_model

MAKERS = {
    "chameleon": tiny_model,
    "showo": lambda: test_discrete_diffusion_recipes.make("showo"),
    "mmada": lambda: test_discrete_diffusion_recipes.make("mmada"),
    "transfusion": test_transfusion.make_model,
    "janus": test_janus.make_model,
    "janusflow": test_janusflow.make_model,
    "mar": test_diffusion_head.make_model,
    "ddit": test_ddit.make_model,
}


# ----- device resolution ------------------------------------------------------------------


def test_auto_is_the_cpu_without_cuda_and_cuda_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert du.resolve_device("auto") == torch.device("cpu")
    assert du.resolve_device("cpu", local_rank=3) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="train.device=cuda but CUDA is not available"):
        du.resolve_device("cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        du.resolve_device("gpu")


def test_auto_takes_the_local_ranks_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert du.resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    assert du.resolve_device("cuda") == torch.device("cuda", 0)
    assert du.resolve_device("cpu", local_rank=1) == torch.device("cpu")
    with pytest.raises(RuntimeError, match="LOCAL_RANK=2 but only 2 GPU"):
        du.resolve_device("auto", local_rank=2)


def test_process_group_and_autocast_follow_the_device():
    assert du.process_group_backend(torch.device("cpu")) == "gloo"
    assert du.process_group_backend(torch.device("cuda", 0)) == "cpu:gloo,cuda:nccl"
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with du.autocast(torch.device("cpu"), "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with du.autocast(torch.device("cpu"), "fp32"):
        assert (a @ b).dtype == torch.float32


def test_single_process_dist_carries_the_resolved_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    d = du.init_from_env("auto" if not torch.cuda.is_available() else "cpu")
    assert d.device == torch.device("cpu") and not d.enabled


def test_cuda_rng_states_round_trip_through_json(monkeypatch):
    # No GPU here: stand-in generator states, to check what is saved is what is restored.
    states = [torch.arange(16, dtype=torch.uint8), torch.full((16,), 7, dtype=torch.uint8)]
    restored = []
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in states])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.extend)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert "cuda" not in st.rng_state(torch.device("cpu"))
    saved = st.rng_state(torch.device("cuda", 0))
    st.set_rng_state(json.loads(json.dumps(saved)), torch.device("cuda", 0))
    assert len(restored) == 2 and all(torch.equal(a, b) for a, b in zip(restored, states))
    assert all(t.dtype == torch.uint8 for t in restored)


# ----- the shadow device itself -------------------------------------------------------------


def test_shadow_device_rejects_cpu_tensors_next_to_device_weights():
    lin = torch.nn.Linear(4, 2)
    x = torch.randn(3, 4)
    ref = lin(x)
    with ShadowDevice():
        lin.to(SHADOW)
        with pytest.raises(DeviceMismatch):
            lin(x)
        y = lin(x.to(SHADOW))
        assert on_shadow(y) and torch.equal(y.detach().cpu(), ref.detach())


def test_tokenizers_follow_the_model_device():
    model = test_janus.make_model()
    model.to("meta")
    assert model.device.type == "meta"
    for tok in (model.parts.image, model.parts.semantic):
        assert {p.device.type for p in tok.parameters()} == {"meta"}
    model = tiny_model().double()  # dtype conversions leave the tokenizers' dtype alone
    assert {p.dtype for p in model.parts.image.parameters()} == {torch.float32}


# ----- every recipe, on the device ----------------------------------------------------------


def _prompts():
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return [[Text("a red circle")], [Text("a blue square")]], [[Image(img), Text("what color?")]]


@pytest.mark.parametrize("recipe", sorted(MAKERS))
def test_recipe_trains_and_generates_on_the_device_of_its_weights(recipe):
    """The loss, its gradients and both generation modalities run with device weights, and
    give what the CPU model gives (the shadow device computes with the same CPU kernels)."""
    cpu, dev = MAKERS[recipe](), MAKERS[recipe]()
    dev.load_state_dict(cpu.state_dict())
    batch = test_transfusion.samples(4)
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=4, steps=2)
    image_prompts, text_prompts = _prompts()

    def run(model):
        model.train()
        out = model.loss(batch, torch.Generator().manual_seed(5))
        out["loss"].backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        model.eval()
        images = model.generate(image_prompts, "image", sampling, seed=3)
        texts = model.generate(text_prompts, "text", sampling, seed=3)
        return out, grads, images, texts

    ref = run(cpu)
    with ShadowDevice():
        dev.to(SHADOW)
        out, grads, images, texts = run(dev)
        assert on_shadow(out["loss"]) and all(on_shadow(g) for g in grads.values())
        loss, grads = float(out["loss"].detach()), {n: g.cpu() for n, g in grads.items()}
    assert loss == pytest.approx(float(ref[0]["loss"].detach()), rel=1e-5)
    assert grads.keys() == ref[1].keys()
    for n, g in grads.items():
        torch.testing.assert_close(g, ref[1][n], rtol=1e-4, atol=1e-6)
    assert all(np.array_equal(a.pixels, b.pixels) for a, b in zip(images, ref[2], strict=True))
    assert [t.text for t in texts] == [t.text for t in ref[3]]


def test_trainer_moves_the_model_and_saves_state_from_the_device(tmp_path, monkeypatch):
    """train_model with the device resolved to the shadow device: the model (tokenizers too)
    is moved there, the losses are the CPU run's, and the training-state checkpoint written
    from device tensors resumes to the same step 3. (Resuming *into* device weights is left to
    benchmarks/gpu_check.py: torch's set_state_dict takes meta tensors for unmaterialised.)"""
    cfg = tiny_train_config(steps=3, save_every=2)
    cpu_rows = train_model(tiny_model(), cfg, stream, tmp_path / "cpu", progress=False)
    monkeypatch.setattr(du, "resolve_device", lambda choice, local_rank=0: SHADOW)
    with ShadowDevice():
        model = tiny_model()
        rows = train_model(model, cfg, stream, tmp_path / "dev", progress=False)
        assert all(on_shadow(p) for p in model.parameters())
        assert all(on_shadow(p) for p in model.parts.image.parameters())
    monkeypatch.undo()
    resumed = train_model(tiny_model(), cfg, stream, tmp_path / "dev", progress=False,
                          resume=True)  # fmt: skip
    losses = [r["loss"] for r in rows]
    assert losses == pytest.approx([r["loss"] for r in cpu_rows], rel=1e-5)
    assert [r["loss"] for r in resumed] == pytest.approx(losses, rel=1e-5)
