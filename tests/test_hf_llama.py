"""Llama / Qwen2 / Qwen3 import: tiny random transformers models saved to disk, loaded into the
unimm backbone, must give the same logits (<= 1e-4, fp32) and the same greedy tokens."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

transformers = pytest.importorskip("transformers")

from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_llama import build_backbone, load_hf_llm  # noqa: E402
from unimm.paradigms.autoregressive import generate  # noqa: E402

TINY = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
)


# Llama 3.1-style scaling with a short original context, so that the tiny head's frequencies
# fall in all three bands (kept, blended, divided).
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def tiny_hf(kind: str, **overrides):
    torch.manual_seed(0)
    if kind == "llama":
        cfg = transformers.LlamaConfig(**{**TINY, "rope_theta": 5000.0, **overrides})
        model = transformers.LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        cfg = transformers.Qwen2Config(**{**TINY, **overrides})
        model = transformers.Qwen2ForCausalLM(cfg)
    else:
        # Qwen3Config's head_dim defaults to 128 whatever the width
        head_dim = TINY["hidden_size"] // TINY["num_attention_heads"]
        cfg = transformers.Qwen3Config(**{**TINY, "head_dim": head_dim, **overrides})
        model = transformers.Qwen3ForCausalLM(cfg)
    with torch.no_grad():  # non-trivial norms and biases, so a mapping slip shows in logits
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                p.mul_(8.0)  # sharp attention, so positions (RoPE) matter to the logits
    return model.eval()


def hf_generate(model, ids: torch.Tensor, n: int) -> list[int]:
    out = model.generate(
        ids,
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
        attention_mask=torch.ones_like(ids),
    )
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize(
    "kind,overrides",
    [
        ("llama", {}),
        ("qwen2", {}),
        ("qwen3", {}),
        ("llama", {"tie_word_embeddings": True}),
        ("llama", {"rope_parameters": LLAMA3_ROPE}),
        ("qwen2", {"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}}),
    ],
    ids=["llama", "qwen2", "qwen3", "llama-tied", "llama3-rope", "linear-rope"],
)
def test_import_matches_transformers(tmp_path, kind, overrides):
    ref = tiny_hf(kind, **overrides)
    ref.save_pretrained(tmp_path)
    model = load_hf_llm(tmp_path)
    ids = torch.randint(0, TINY["vocab_size"], (2, 90), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(ids).logits
        got = model(ids)
    assert (got - want).abs().max() <= 1e-4
    if "rope_parameters" in overrides:  # the scaling matters at this length: plain RoPE fails
        plain = build_backbone(
            replace(model.config, rope_scaling="none"), model.state_dict()
        ).eval()
        with torch.no_grad():
            assert (plain(ids) - want).abs().max() > 1e-2
    assert model.config.qkv_bias == (kind == "qwen2")
    assert model.config.qk_norm == (kind == "qwen3")
    assert model.config.tie_embeddings == bool(overrides.get("tie_word_embeddings", False))
    prompt = ids[:1, :5]
    ours = generate(model, [prompt[0].tolist()], 12, temperature=0.0)[0]
    assert ours == hf_generate(ref, prompt, 12)


def test_sharded_checkpoint(tmp_path):
    ref = tiny_hf("qwen2")
    ref.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    ids = torch.arange(10)[None]
    with torch.no_grad():
        assert (load_hf_llm(tmp_path)(ids) - ref(ids).logits).abs().max() <= 1e-4
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    (tmp_path / shards[-1]).rename(tmp_path / "moved.safetensors")
    with pytest.raises(HFImportError, match=f"lists shard {shards[-1]}, which is missing"):
        load_hf_llm(tmp_path)
    (tmp_path / "moved.safetensors").rename(tmp_path / shards[-1])
    index["weight_map"]["model.layers.9.mlp.up_proj.weight"] = shards[0]  # listed, not stored
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(HFImportError, match="absent from its shards"):
        load_hf_llm(tmp_path)


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def test_refusals_name_the_problem(tmp_path):
    ref = tiny_hf("llama")
    ref.save_pretrained(tmp_path)
    _edit_config(tmp_path, intermediate_size=48)
    with pytest.raises(HFImportError, match=r"gate_proj.weight has shape \(64, 32\).*\(48, 32\)"):
        load_hf_llm(tmp_path)
    yarn = {"rope_type": "yarn", "factor": 2.0}
    _edit_config(tmp_path, intermediate_size=64, rope_parameters=yarn)
    with pytest.raises(HFImportError, match="RoPE type 'yarn'"):
        load_hf_llm(tmp_path)
    _edit_config(tmp_path, rope_parameters=None, model_type="gpt2")
    with pytest.raises(HFImportError, match="model_type 'gpt2'"):
        load_hf_llm(tmp_path)
    _edit_config(tmp_path, model_type="llama", num_hidden_layers=1)
    with pytest.raises(HFImportError, match=r"no place for: \['model.layers.1"):
        load_hf_llm(tmp_path)
    _edit_config(tmp_path, num_hidden_layers=2, attention_bias=True)
    with pytest.raises(HFImportError, match="attention_bias=True"):
        load_hf_llm(tmp_path)
    _edit_config(tmp_path, attention_bias=False)
    (tmp_path / "model.safetensors").unlink()
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(HFImportError, match="never loads pickles"):
        load_hf_llm(tmp_path)


def test_real_qwen2_05b_layer_shapes(tmp_path):
    """Qwen2-0.5B's widths (head_dim 64, 14 query heads sharing 2 kv heads, tied embeddings,
    rope_theta 1e6) with 2 layers and a small vocabulary: the odd GQA ratio maps too."""
    shapes = dict(
        vocab_size=512,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=2,
        num_attention_heads=14,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
        rms_norm_eps=1e-6,
    )
    ref = tiny_hf("qwen2", **shapes)
    ref.save_pretrained(tmp_path)
    model = load_hf_llm(tmp_path)
    assert (model.config.n_heads, model.config.n_kv_heads, model.config.head_dim) == (14, 2, 64)
    ids = torch.randint(0, 512, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(ids) - ref(ids).logits).abs().max() <= 1e-4


def test_bf16_checkpoint_loads_in_fp32_or_bf16(tmp_path):
    """Released checkpoints are bf16: read as fp32 by default (exact upcast), or kept bf16."""
    ref = tiny_hf("llama").to(torch.bfloat16)
    ref.save_pretrained(tmp_path)
    ids = torch.arange(30)[None]
    model = load_hf_llm(tmp_path)
    assert model.tok_embeddings.weight.dtype == torch.float32
    with torch.no_grad():
        # transformers itself, reading the bf16 folder into fp32
        fp32 = transformers.LlamaForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
        want = fp32.eval()(ids).logits
        assert (model(ids) - want).abs().max() <= 1e-4
        half = load_hf_llm(tmp_path, dtype=torch.bfloat16)
        assert half.tok_embeddings.weight.dtype == torch.bfloat16
        assert (half(ids).float() - want).abs().max() < 0.1
