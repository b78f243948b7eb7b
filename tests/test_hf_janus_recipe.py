"""A Hugging Face Janus imported as a unimm janus-recipe model (`--kind janus`): a tiny random
JanusForConditionalGeneration with a word-level tokenizer.json; on the ids of unimm's prompt
layout, text logits (with and without an image), greedy answers, the generation head's code
logits (with and without guidance), greedy codes and the VQ model must match transformers'; the
checkpoint saves and reloads identically; the CLI imports it and refuses a non-Janus folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers  # noqa: E402

from tests.hf_tiny import assert_reloads_identically, save_janus  # noqa: E402
from tests.test_hf_unified import hf_llm_folder  # noqa: E402
from unimm.cli import main  # noqa: E402
from unimm.data.images import to_tensor  # noqa: E402
from unimm.data.sample import Image, Sample, Text  # noqa: E402
from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_janus_vq import HFJanusVQ  # noqa: E402
from unimm.interop.hf_vision import HFSemanticEncoder  # noqa: E402
from unimm.interop.importer import import_hf  # noqa: E402
from unimm.paradigms.autoregressive import generate  # noqa: E402
from unimm.recipes.base import SamplingConfig  # noqa: E402
from unimm.recipes.janus import JanusModel  # noqa: E402

VOCAB, D, CODES = 96, 32, 24
PAD, BOS, EOS, IMAGE_ID, BOI, EOI, ASSISTANT = 0, 1, 2, 90, 91, 92, 93
SPECIALS = {
    "<｜▁pad▁｜>": PAD,
    "<｜begin▁of▁sentence｜>": BOS,
    "<｜end▁of▁sentence｜>": EOS,
    "<image_placeholder>": IMAGE_ID,
    "<begin_of_image>": BOI,
    "<end_of_image>": EOI,
    "<|Assistant|>": ASSISTANT,
}


def write_tokenizer(path, assistant: bool = True) -> None:
    """Words w3..w89 plus Janus's special tokens at fixed ids; unimm adds <|user|> and
    <|mask|> (ids 94, 95), so the tokenizer ends exactly at the LLM's vocabulary. Without
    <|Assistant|> (id 93 becomes a word) unimm adds its own too and the vocabulary grows."""
    specials = {t: i for t, i in SPECIALS.items() if assistant or i != ASSISTANT}
    vocab = {f"w{i}": i for i in range(3, IMAGE_ID)} | specials
    if not assistant:
        vocab["w93"] = ASSISTANT
    tok = Tokenizer(models.WordLevel(dict(sorted(vocab.items(), key=lambda kv: kv[1])), "w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    assert all(tok.token_to_id(t) == i for t, i in specials.items())
    tok.save(str(path / "tokenizer.json"))
    names = {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}
    (path / "tokenizer_config.json").write_text(json.dumps(names | {"pad_token": "<｜▁pad▁｜>"}))


def tiny_janus(path, tie: bool, depth: int = 2, assistant: bool = True):
    model = save_janus(
        path,
        vocab=VOCAB,
        dim=D,
        image_id=IMAGE_ID,
        codes=CODES,
        tie=tie,
        vision_hidden=24,
        aligner_depth=depth,
    )
    write_tokenizer(path, assistant)
    return model


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("janus")
    ref = tiny_janus(path, request.param)
    return ref, JanusModel.from_pretrained(path), path


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def prompt(model: JanusModel, segments, modality="text") -> tuple[torch.Tensor, torch.Tensor]:
    """unimm's prompt ids (placeholders filled into the model's bank) and the same ids with
    Janus's <image_placeholder> in the image slots, for transformers."""
    model._bank = None
    ids = torch.tensor([model._prompt_ids(segments, modality)])
    hf = ids.masked_fill(ids >= model.image_offset + model.codebook, IMAGE_ID)
    return ids, hf


def hf_greedy(ref, ids, n, pixels=None):
    extra = {} if pixels is None else {"pixel_values": pixels}
    out = ref.generate(
        input_ids=ids,
        **extra,
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=PAD,
        generation_mode="text",
    )
    return out[0, ids.shape[1] :].tolist()


def test_import_layout_and_parts(pair):
    _, model, _ = pair
    tok = model.text_tok
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id) == (0, 1, 2, BOI, EOI)
    assert tok.assistant_id == ASSISTANT and (tok.user_id, tok.mask_id) == (94, 95)
    assert tok.vocab_size == VOCAB and model.image_offset == VOCAB and model.codebook == CODES
    assert not model.pos2d and not hasattr(model, "image_row")
    assert isinstance(model.semantic, HFSemanticEncoder) and model.semantic.grid == (4, 4)
    assert isinstance(model.image_tok, HFJanusVQ) and model.image_tok.grid == (4, 4)
    assert model.image_resolution == 16
    ids, _ = prompt(model, [Image(picture(0)), Text("w5 w6")])
    slots = list(range(VOCAB + CODES, VOCAB + CODES + 16))
    assert ids[0].tolist() == [BOS, BOI, *slots, EOI, 5, 6, ASSISTANT]


def test_text_logits_and_greedy_match(pair):
    ref, model, _ = pair
    ids, _ = prompt(model, [Text("w30 w45 w60 w77 w33")])
    assert ids[0].tolist() == [BOS, 30, 45, 60, 77, 33, ASSISTANT]
    with torch.no_grad():
        want = ref(ids).logits
        assert (model(ids)[..., :VOCAB] - want).abs().max() <= 1e-4
    ours = generate(model, ids.tolist(), 8, allowed_ids=range(VOCAB), temperature=0.0)[0]
    assert ours == hf_greedy(ref, ids, 8)


def test_logits_and_greedy_with_an_image_match(pair):
    ref, model, _ = pair
    image = picture(1)
    ids, hf_ids = prompt(model, [Text("w30"), Image(image), Text("w40 w41")])
    pixels = to_tensor([image], "cpu")  # what Janus's processor gives: mean 0.5, std 0.5
    with torch.no_grad():
        want = ref(input_ids=hf_ids, pixel_values=pixels).logits
        assert (model(ids)[..., :VOCAB] - want).abs().max() <= 1e-4
    ours = generate(model, ids.tolist(), 6, allowed_ids=range(VOCAB), temperature=0.0)[0]
    model._bank = None
    assert ours == hf_greedy(ref, hf_ids, 6, pixels)
    # The recipe's own entry point: the same greedy tokens, decoded and cut at <eos>.
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=6)
    answer = model.generate([[Text("w30"), Image(image), Text("w40 w41")]], "text", sampling)[0]
    hf = hf_greedy(ref, hf_ids, 6, pixels)
    hf = hf[: hf.index(EOS)] if EOS in hf else hf
    assert answer.text == model.text_tok.decode(hf)


def test_generation_head_logits_and_greedy_codes_match(pair):
    ref, model, _ = pair
    cond, _ = prompt(model, [Text("w30 w31 w32")], "image")
    uncond, _ = prompt(model, [], "image")
    assert cond[0].tolist() == [BOS, 30, 31, 32, BOI] and uncond[0].tolist() == [BOS, BOI]
    lm, head = ref.model.language_model, ref.model.generation_head
    with torch.no_grad():
        c, u = (head(lm(input_ids=x).last_hidden_state)[0, -1] for x in (cond, uncond))
        ours_c, ours_u = (model(x)[0, -1, VOCAB:] for x in (cond, uncond))
    assert (ours_c - c).abs().max() <= 1e-4 and (ours_u - u).abs().max() <= 1e-4
    guided_ref = u + 5.0 * (c - u)
    assert ((ours_u + 5.0 * (ours_c - ours_u)) - guided_ref).abs().max() <= 5e-4
    codes = range(VOCAB, VOCAB + CODES)
    guided = generate(
        model, cond.tolist(), 1, cfg_scale=5.0, uncond_prompts=uncond.tolist(),
        allowed_ids=codes, temperature=0.0,
    )  # fmt: skip
    assert guided[0][0] - VOCAB == int(guided_ref.argmax())
    # Greedy codes, each fed back through the generation embedding + aligner (no 2-D add).
    greedy = generate(model, cond.tolist(), 5, allowed_ids=codes, temperature=0.0)[0]
    ours = [t - VOCAB for t in greedy]
    embeds, want = ref.get_input_embeddings()(cond), []
    for _ in range(5):
        with torch.no_grad():
            code = head(lm(inputs_embeds=embeds).last_hidden_state[:, -1:])[0, -1].argmax()
            nxt = ref.prepare_embeddings_for_image_generation(code.view(1, 1))
        want.append(int(code))
        embeds = torch.cat([embeds, nxt], dim=1)
    assert ours == want


def test_vq_tokenizer_matches_the_janus_vq_model(pair):
    ref, model, _ = pair
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        want = ref.model.vqmodel.encode(images).image_tokens.view(2, 4, 4)
        codes = model.image_tok.encode(images)
        assert torch.equal(codes, want)
        pixels = ref.model.vqmodel.decode(codes.flatten(1)).clamp(-1, 1)
    assert (model.image_tok.decode(codes) - pixels).abs().max() <= 1e-5
    sampling = SamplingConfig(temperature=1.0, cfg_scale=3.0)
    out = model.generate([[Text("w30 w31")]], "image", sampling, seed=0)
    assert out[0].pixels.shape == (16, 16, 3) and out[0].pixels.dtype == np.uint8


def test_checkpoint_saves_and_reloads_identically(pair, tmp_path):
    _, model, _ = pair
    model.save_pretrained(tmp_path / "ck")
    back = JanusModel.from_pretrained(tmp_path / "ck")
    assert isinstance(back.image_tok, HFJanusVQ) and isinstance(back.semantic, HFSemanticEncoder)
    assert back.text_tok.markers == model.text_tok.markers and not back.pos2d
    assert_reloads_identically(model, back, prompt, picture(2))


def test_cli_imports_janus_and_refuses_other_folders(pair, tmp_path, capsys):
    ref, model, path = pair
    code = main(["import", str(path), str(tmp_path / "ck"), "--kind", "janus"])
    assert code == 0, capsys.readouterr().err
    back = JanusModel.from_pretrained(tmp_path / "ck")
    ids, hf_ids = prompt(back, [Text("w30 w31")])
    with torch.no_grad():
        assert (back(ids)[..., :VOCAB] - ref(hf_ids).logits).abs().max() <= 1e-4
    (tmp_path / "llm").mkdir()
    hf_llm_folder(tmp_path / "llm")
    code = main(["import", str(tmp_path / "llm"), str(tmp_path / "bad"), "--kind", "janus"])
    err = capsys.readouterr().err
    assert code == 2 and "'llama' model, not a JanusForConditionalGeneration" in err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(HFImportError, match="import it with --kind janus"):
        import_hf(path, tmp_path / "cham", "chameleon", image_tokenizer=tmp_path / "ck")


def test_deeper_aligners_and_a_grown_vocabulary(tmp_path):
    """Aligners of depth 3 map onto janus.*_aligner_depth; a tokenizer without <|Assistant|>
    gets unimm's markers appended (user 94, assistant 95, mask 96): the one past the LLM's 96
    rows is a new row, every other id keeps its row and logits."""
    ref = tiny_janus(tmp_path, tie=False, depth=3, assistant=False)
    model = JanusModel.from_pretrained(tmp_path)
    j = model.parts.config.janus
    assert (j.und_aligner_depth, j.gen_aligner_depth, j.gen_embed_dim) == (3, 3, 8)
    assert model.text_tok.vocab_size == VOCAB + 1 and model.text_tok.assistant_id == 95
    image = picture(4)
    ids, hf_ids = prompt(model, [Text("w30"), Image(image), Text("w93 w41")])
    assert ids[0, -1] == 95
    with torch.no_grad():
        want = ref(input_ids=hf_ids, pixel_values=to_tensor([image], "cpu")).logits
        assert (model(ids)[..., :VOCAB] - want).abs().max() <= 1e-4
        cond = torch.tensor([[BOS, 30, 31, BOI]])
        codes = torch.tensor([[VOCAB + 1 + 5]])  # code 5 fed back through gen_embed + aligner
        embeds = torch.cat(
            [
                ref.get_input_embeddings()(cond),
                ref.prepare_embeddings_for_image_generation(codes - VOCAB - 1),
            ],
            dim=1,
        )
        hidden = ref.model.language_model(inputs_embeds=embeds).last_hidden_state
        want = ref.model.generation_head(hidden)[0]
        got = model(torch.cat([cond, codes], dim=1))[0, :, VOCAB + 1 :]
    assert (got - want).abs().max() <= 1e-4


def test_imported_model_trains_a_step(pair):
    """The import is a recipe model: its loss runs on samples at the VQ's resolution and
    reaches the backbone, the aligners and the generation head (SigLIP and VQ stay frozen)."""
    _, _, path = pair
    model = JanusModel.from_pretrained(path).train()
    samples = [
        Sample([Image(picture(5)), Text("w5 w6")], targets=(1,), task="vqa"),
        Sample([Text("w7 w8"), Image(picture(6))], targets=(1,), task="t2i"),
    ]
    out = model.loss(samples, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and {"loss_text", "loss_image"} <= out.keys()
    for p in (model.backbone.layers[0].attn.wqkv.weight, model.und_aligner[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    for p in (model.gen_embed.weight, model.gen_aligner[0].weight, model.gen_head[2].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.semantic.parameters())
    assert not any(p.requires_grad for p in model.image_tok.parameters())


def test_vq_tensors_that_do_not_fit_the_config_are_refused(pair, tmp_path):
    _, _, path = pair
    for f in path.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vq_config"]["base_channels"] = 2 * cfg["vq_config"].get("base_channels", 128)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFImportError, match=r"model\.vqmodel\.\* tensors do not fit the config"):
        JanusModel.from_pretrained(tmp_path)
