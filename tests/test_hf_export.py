"""Export: a unimm backbone saved as a Hugging Face folder loads in transformers with the same
logits, and importing it back gives the same tensors (round trip)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_llama import export_hf_llm, load_hf_llm  # noqa: E402
from unimm.model.config import tiny  # noqa: E402
from unimm.model.transformer import Transformer  # noqa: E402


def random_backbone(**overrides) -> Transformer:
    torch.manual_seed(0)
    model = Transformer(tiny(rope_theta=20000.0, norm_eps=1e-6, **overrides))
    with torch.no_grad():  # non-trivial gains and biases, so a mapping slip shows in logits
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize(
    "overrides,arch",
    [
        ({}, "LlamaForCausalLM"),
        ({"qkv_bias": True}, "Qwen2ForCausalLM"),
        ({"tie_embeddings": True}, "LlamaForCausalLM"),
        ({"qk_norm": True}, "Qwen3ForCausalLM"),
        (
            {
                "rope_scaling": "llama3",
                "rope_scaling_factor": 8.0,
                "rope_llama3_freq_factors": (1.0, 4.0),
                "rope_original_max_seq_len": 64,
            },
            "LlamaForCausalLM",
        ),
    ],
    ids=["llama", "qwen2", "tied", "qwen3", "llama3-rope"],
)
def test_export_loads_in_transformers(tmp_path, overrides, arch):
    model = random_backbone(**overrides)
    export_hf_llm(model, tmp_path / "hf")
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(ref).__name__ == arch
    ids = torch.randint(0, 64, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (ref(ids).logits - model(ids)).abs().max() <= 1e-4
    back = load_hf_llm(tmp_path / "hf")
    assert back.config == model.config
    for (name, a), b in zip(model.state_dict().items(), back.state_dict().values()):
        assert torch.equal(a, b), name


def test_sharded_export_round_trip(tmp_path):
    model = random_backbone()
    export_hf_llm(model, tmp_path / "hf", max_shard_bytes=16_000)
    assert len(list((tmp_path / "hf").glob("model-*-of-*.safetensors"))) > 1
    ref = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.arange(30)[None]
    with torch.no_grad():
        assert (ref(ids).logits - model(ids)).abs().max() <= 1e-4
        assert torch.equal(load_hf_llm(tmp_path / "hf")(ids), model(ids))


def test_export_refuses_what_llama_cannot_hold(tmp_path):
    refused = {
        "per-head q/k LayerNorm": {"qk_norm": True, "qk_norm_kind": "layer_per_head"},
        "q/k norms and q/k/v biases": {"qk_norm": True, "qkv_bias": True},
        "attention sinks": {"attention_sink": True},
    }
    for why, overrides in refused.items():
        with pytest.raises(HFImportError, match=why):
            export_hf_llm(random_backbone(**overrides), tmp_path / "hf")
        assert not (tmp_path / "hf").exists()
