"""A unified recipe started from an imported HF LLM: vocabulary grown for image codes, every
pretrained row kept, and one training step runs and lowers nothing to NaN."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

transformers = pytest.importorskip("transformers")

from tests.test_chameleon import CORPUS, samples  # noqa: E402
from unimm.interop.hf_llama import load_hf_llm  # noqa: E402
from unimm.interop.unified import chameleon_from_hf_llm, text_tokenizer_from_hf  # noqa: E402
from unimm.interop.vocab import resize_vocabulary  # noqa: E402
from unimm.presets import get_run_config  # noqa: E402
from unimm.recipes.chameleon import ChameleonModel  # noqa: E402
from unimm.tokenizers.text import SPECIAL_TOKENS  # noqa: E402
from unimm.tokenizers.vq import VQTokenizer  # noqa: E402


def hf_llm_folder(path, tie=False, kind="llama"):
    """A tiny Llama (or Qwen2) and a BPE tokenizer.json of its own (no unimm markers) in
    `path`."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
    }[kind]
    cfg = config_class(
        vocab_size=tok.get_vocab_size() + 4,  # padded rows, as real checkpoints have
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=192,
        tie_word_embeddings=tie,
    )
    model = model_class(cfg)
    if kind == "qwen2":  # non-zero q/k/v biases, so dropping them would show
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith(".bias"):
                    p.normal_(0.0, 0.1)
    model.save_pretrained(path)
    return tok


def test_resize_keeps_rows_and_adds_mean_rows(tmp_path):
    hf_llm_folder(tmp_path)
    model = load_hf_llm(tmp_path)
    V = model.config.vocab_size
    grown = resize_vocabulary(model, V + 50, noise=0.01)
    emb, out = grown.tok_embeddings.weight, grown.output.weight
    assert torch.equal(emb[:V], model.tok_embeddings.weight)
    assert torch.equal(out[:V], model.output.weight)
    new = emb[V:]
    mean = model.tok_embeddings.weight.mean(0)
    assert (new - mean).abs().max() < 0.1 * model.tok_embeddings.weight.std(0).max()
    assert new.std(0).min() > 0  # noise breaks the symmetry between new tokens
    ids = torch.arange(V)[None]
    with torch.no_grad():  # old-token logits for old tokens are unchanged
        assert torch.allclose(grown(ids)[..., :V], model(ids), atol=1e-6)
    assert resize_vocabulary(model, V - 4).config.vocab_size == V - 4


def test_text_tokenizer_keeps_ids_and_adds_markers(tmp_path):
    tok = hf_llm_folder(tmp_path)
    text = text_tokenizer_from_hf(tmp_path)
    assert text.vocab_size == tok.get_vocab_size() + len(SPECIAL_TOKENS)
    assert text.encode("a red circle") == tok.encode("a red circle").ids
    assert text.bos_id >= tok.get_vocab_size()
    (tmp_path / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="tokenizer.json"):
        text_tokenizer_from_hf(tmp_path)


@pytest.mark.parametrize(
    "tie,kind", [(False, "llama"), (True, "llama"), (True, "qwen2")], ids=["llama", "tied", "qwen2"]
)
def test_chameleon_trains_from_imported_llm(tmp_path, tie, kind):
    (tmp_path / "llm").mkdir()
    hf_llm_folder(tmp_path / "llm", tie, kind)
    run = get_run_config("tiny")
    image = VQTokenizer(run.vq)
    model = chameleon_from_hf_llm(tmp_path / "llm", image, run)
    llm = load_hf_llm(tmp_path / "llm")
    n_text = model.text_tok.vocab_size
    assert model.image_offset == n_text
    assert model.config.vocab_size == n_text + image.codebook_size
    keep = min(n_text, llm.config.vocab_size)
    emb = model.backbone.tok_embeddings.weight
    assert torch.equal(emb[:keep], llm.tok_embeddings.weight[:keep])
    assert torch.equal(model.backbone.layers[1].mlp.w2.weight, llm.layers[1].mlp.w2.weight)
    assert model.config.qkv_bias == (kind == "qwen2")
    if kind == "qwen2":
        bias = model.backbone.layers[0].attn.wqkv.bias
        assert torch.equal(bias, llm.layers[0].attn.wqkv.bias) and bias.abs().sum() > 0
    assert (model.backbone.output.weight is model.backbone.tok_embeddings.weight) == tie

    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = model.backbone.layers[0].attn.wqkv.weight.detach().clone()
    out = model.loss(samples(4), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and "loss_image" in out and "loss_text" in out
    out["loss"].backward()
    opt.step()
    assert not torch.equal(before, model.backbone.layers[0].attn.wqkv.weight)

    model.save_pretrained(tmp_path / "ckpt")
    again = ChameleonModel.from_pretrained(tmp_path / "ckpt")
    ids = torch.arange(20)[None]
    with torch.no_grad():
        assert torch.equal(again(ids), model.eval()(ids))
