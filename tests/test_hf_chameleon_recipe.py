"""A Hugging Face Chameleon imported as a unimm chameleon-recipe model (`--kind chameleon` on a
folder with model_type "chameleon"): a tiny random ChameleonForConditionalGeneration whose 16
image codes sit at scattered ids of its 96-id vocabulary, with a word-level tokenizer.json. On
the ids of unimm's prompt layout, text logits (with and without an image), greedy answers,
greedy image codes (with and without guidance) and the VQ encoder must match transformers'; the
checkpoint saves and reloads identically; the CLI imports it; mismatches are refused."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers  # noqa: E402

from tests.hf_tiny import assert_reloads_identically, save_chameleon  # noqa: E402
from unimm.cli import main  # noqa: E402
from unimm.data.images import to_tensor  # noqa: E402
from unimm.data.sample import Image, Sample, Text  # noqa: E402
from unimm.interop.hf_chameleon import code_token  # noqa: E402
from unimm.interop.hf_chameleon_vq import HFChameleonVQ  # noqa: E402
from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.paradigms.autoregressive import generate  # noqa: E402
from unimm.recipes.base import SamplingConfig, UnsupportedTask  # noqa: E402
from unimm.recipes.chameleon import ChameleonModel  # noqa: E402

VOCAB, N_CODES, GRID = 96, 16, 8
BOS, PAD, EOS, IMAGE, BOI, EOI = 0, 1, 2, 20, 21, 22
# Code c is id CODE_IDS[c]: not contiguous and not in order, so no offset arithmetic can pass.
CODE_IDS = [11, 4, 63, 5, 60, 10, 6, 67, 7, 61, 8, 66, 9, 62, 64, 65]
SPECIALS = {"<s>": BOS, "<pad>": PAD, "</s>": EOS, "<image>": IMAGE}
SPECIALS |= {"<racm3:break>": BOI, "<eoss>": EOI}
USER, ASSISTANT, MASK = 96, 97, 98  # unimm's markers Chameleon lacks, appended


def vocabulary() -> dict[str, int]:
    vocab = {code_token(c): i for c, i in enumerate(CODE_IDS)} | SPECIALS
    taken = set(vocab.values())
    return vocab | {f"w{i}": i for i in range(VOCAB) if i not in taken}


def write_tokenizer(path, vocab: dict[str, int]) -> None:
    tok = Tokenizer(models.WordLevel(dict(sorted(vocab.items(), key=lambda kv: kv[1])), "w3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.save(str(path / "tokenizer.json"))
    names = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
    (path / "tokenizer_config.json").write_text(json.dumps(names))


def tiny_chameleon(path):
    special = dict(bos_token_id=BOS, pad_token_id=PAD, eos_token_id=EOS)
    model = save_chameleon(path, vocab=VOCAB, codes=N_CODES, vocabulary_map=vocabulary(), **special)
    write_tokenizer(path, vocabulary())
    return model


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("chameleon")
    ref = tiny_chameleon(path)
    return ref, ChameleonModel.from_pretrained(path), path


def picture(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def prompt(model: ChameleonModel, segments, modality="text") -> tuple[torch.Tensor, torch.Tensor]:
    """unimm's prompt ids and the same ids with Chameleon's <image> in the image slots (what its
    processor gives transformers: <racm3:break> <image> x 64 <eoss>)."""
    ids = torch.tensor([model._prompt_ids(segments, modality)])
    return ids, ids.masked_fill(model.image_slots(ids), IMAGE)


def hf_greedy(ref, ids, n, pixels=None):
    extra = {} if pixels is None else {"pixel_values": pixels}
    out = ref.generate(
        input_ids=ids, **extra, max_new_tokens=n, do_sample=False, eos_token_id=None,
        pad_token_id=PAD,
    )  # fmt: skip
    return out[0, ids.shape[1] :].tolist()


def hf_code_logits(ref, ids) -> torch.Tensor:
    """transformers' raw last-position logits over the image ids, in code order (its forward
    sets image columns to -inf, as understanding wants)."""
    with torch.no_grad():
        hidden = ref.model(input_ids=ids).last_hidden_state[:, -1]
        return ref.lm_head(hidden)[0, CODE_IDS]


def test_import_layout_and_parts(pair):
    _, model, _ = pair
    tok = model.text_tok
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.boi_id, tok.eoi_id) == (BOS, PAD, EOS, 21, 22)
    assert (tok.user_id, tok.assistant_id, tok.mask_id) == (USER, ASSISTANT, MASK)
    assert tok.vocab_size == VOCAB + 3 == model.config.vocab_size
    assert model.code_ids.tolist() == CODE_IDS and not model.codes_after_text
    assert not model.pos2d and not hasattr(model, "image_row")
    assert isinstance(model.image_tok, HFChameleonVQ) and model.image_tok.grid == (GRID, GRID)
    assert model.image_resolution == 16 and model.image_tokens == GRID * GRID
    text = model.text_ids()
    assert len(text) == VOCAB + 3 - N_CODES and not set(text.tolist()) & set(CODE_IDS)
    ids, _ = prompt(model, [Image(picture(0)), Text("w30 w31")])
    assert ids[0, :2].tolist() == [BOS, BOI] and ids[0, -4:].tolist() == [EOI, 30, 31, ASSISTANT]
    assert set(ids[0, 2:-4].tolist()) <= set(CODE_IDS)
    assert model.image_slots(ids)[0].tolist() == [False] * 2 + [True] * 64 + [False] * 4


def test_text_logits_and_greedy_match(pair):
    ref, model, _ = pair
    ids, _ = prompt(model, [Text("w30 w45 w70 w77 w33")])
    ids = ids[:, :-1]  # <|assistant|> is a new token Chameleon cannot read
    assert ids[0].tolist() == [BOS, 30, 45, 70, 77, 33]
    text = model.text_ids()[:-3]  # Chameleon's own text ids
    with torch.no_grad():
        want = ref(ids).logits
        assert (model(ids)[..., text] - want[..., text]).abs().max() <= 1e-4
    ours = generate(model, ids.tolist(), 8, allowed_ids=model.text_ids(), temperature=0.0)[0]
    assert ours == hf_greedy(ref, ids, 8)


def test_logits_and_greedy_with_an_image_match(pair):
    ref, model, _ = pair
    image = picture(1)
    ids, hf_ids = prompt(model, [Text("w30"), Image(image), Text("w40 w41")])
    ids, hf_ids = ids[:, :-1], hf_ids[:, :-1]
    pixels = to_tensor([image], "cpu")  # what Chameleon's processor gives: [-1, 1]
    with torch.no_grad():
        assert torch.equal(ids[hf_ids == IMAGE], ref.model.get_image_tokens(pixels).flatten())
        want = ref(input_ids=hf_ids, pixel_values=pixels).logits
    text = model.text_ids()[:-3]
    with torch.no_grad():
        assert (model(ids)[..., text] - want[..., text]).abs().max() <= 1e-4
    ours = generate(model, ids.tolist(), 6, allowed_ids=model.text_ids(), temperature=0.0)[0]
    assert ours == hf_greedy(ref, hf_ids, 6, pixels)


def test_recipe_answer_matches_transformers_given_the_new_rows(pair):
    """`generate(..., "text")` on unimm's whole layout (ending in the appended <|assistant|>)
    equals transformers' greedy answer once transformers is given unimm's three new rows."""
    ref, model, _ = pair
    ref = copy.deepcopy(ref)
    ref.resize_token_embeddings(VOCAB + 3)
    with torch.no_grad():
        ref.get_input_embeddings().weight[VOCAB:] = model.backbone.tok_embeddings.weight[VOCAB:]
        ref.lm_head.weight[VOCAB:] = model.backbone.output.weight[VOCAB:]
    image = picture(2)
    segments = [Text("w30"), Image(image), Text("w40 w41")]
    _, hf_ids = prompt(model, segments)
    hf = hf_greedy(ref, hf_ids, 6, to_tensor([image], "cpu"))
    hf = hf[: hf.index(EOS)] if EOS in hf else hf
    answer = model.generate([segments], "text", SamplingConfig(temperature=0.0, max_new_tokens=6))
    assert answer[0].text == model.text_tok.decode(hf)


def test_greedy_image_codes_match(pair):
    ref, model, _ = pair
    cond, _ = prompt(model, [Text("w30 w31 w32")], "image")
    assert cond[0].tolist() == [BOS, 30, 31, 32, BOI]
    greedy = SamplingConfig(temperature=0.0, cfg_scale=1.0)
    codes = model.generate_image_codes([[Text("w30 w31 w32")]], greedy)
    assert codes.shape == (1, GRID, GRID)
    seq, want = cond, []
    for _ in range(GRID * GRID):  # transformers' raw logits, restricted to image ids, argmax
        code = int(hf_code_logits(ref, seq).argmax())
        want.append(code)
        seq = torch.cat([seq, torch.tensor([[CODE_IDS[code]]])], dim=1)
    assert codes.flatten().tolist() == want
    # Guidance: the first code is the argmax of u + s (c - u) over transformers' code logits.
    uncond, _ = prompt(model, [], "image")
    assert uncond[0].tolist() == [BOS, BOI]
    c, u = hf_code_logits(ref, cond), hf_code_logits(ref, uncond)
    guided = SamplingConfig(temperature=0.0, cfg_scale=3.0, cfg_keep_background=False)
    first = model.generate_image_codes([[Text("w30 w31 w32")]], guided)[0, 0, 0]
    assert int(first) == int((u + 3.0 * (c - u)).argmax())
    sampled = model.generate_image_codes([[Text("w30")], [Text("w31")]], seed=[0, 1])
    assert sampled.shape == (2, GRID, GRID) and 0 <= sampled.min() and sampled.max() < N_CODES


def test_no_pixels_from_a_vq_without_decoder(pair):
    _, model, _ = pair
    with pytest.raises(UnsupportedTask, match="no decoder.*generate_image_codes"):
        model.generate([[Text("w30")]], "image")
    with pytest.raises(NotImplementedError, match="has no decoder"):
        model.image_tok.decode(torch.zeros(1, GRID, GRID, dtype=torch.long))


def test_vq_tokenizer_matches_the_chameleon_vq_model(pair):
    ref, model, _ = pair
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        want = ref.model.vqmodel.encode(images).image_tokens.view(2, GRID, GRID)
        codes = model.image_tok.encode(images)
        assert torch.equal(codes, want)
        bpe = ref.model.get_image_tokens(images)  # transformers' img2bpe
    assert torch.equal(model.codes_to_ids(codes.flatten(1)), bpe)
    assert torch.equal(model.ids_to_codes(bpe).view(2, GRID, GRID), codes)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model.image_tok.encode(torch.zeros(1, 3, 32, 32))


def test_checkpoint_saves_and_reloads_identically(pair, tmp_path):
    _, model, _ = pair
    model.save_pretrained(tmp_path / "ck")
    back = ChameleonModel.from_pretrained(tmp_path / "ck")
    assert isinstance(back.image_tok, HFChameleonVQ) and not back.pos2d
    assert back.text_tok.markers == model.text_tok.markers
    assert back.parts.config.chameleon == model.parts.config.chameleon
    assert torch.equal(back.code_ids, model.code_ids)
    assert_reloads_identically(model, back, prompt, picture(4))


def test_cli_imports_chameleon(pair, tmp_path, capsys):
    ref, _, path = pair
    code = main(["import", str(path), str(tmp_path / "ck"), "--kind", "chameleon"])
    assert code == 0, capsys.readouterr().err
    back = ChameleonModel.from_pretrained(tmp_path / "ck")
    ids, _ = prompt(back, [Text("w30 w31")])
    ids = ids[:, :-1]
    text = back.text_ids()[:-3]
    with torch.no_grad():
        assert (back(ids)[..., text] - ref(ids).logits[..., text]).abs().max() <= 1e-4
    bad = ["import", str(path), str(tmp_path / "bad"), "--kind", "chameleon"]
    code = main(bad + ["--image-tokenizer", str(tmp_path / "ck" / "image_tokenizer")])
    err = capsys.readouterr().err
    assert code == 2 and "brings its own VQ image tokenizer" in err
    assert not (tmp_path / "bad").exists()


def test_mismatches_are_refused(tmp_path):
    tiny_chameleon(tmp_path)
    vocab = vocabulary()
    vocab[code_token(0)], vocab["w3"] = 3, CODE_IDS[0]  # tokenizer.json disagrees with config
    write_tokenizer(tmp_path, vocab)
    with pytest.raises(HFImportError, match="IMGIMGAZ is id 3 in tokenizer.json but 11"):
        ChameleonModel.from_pretrained(tmp_path)
    write_tokenizer(tmp_path, vocabulary())
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["vq_config"]["num_embeddings"] = 32
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFImportError, match="vq_config.num_embeddings is 32"):
        ChameleonModel.from_pretrained(tmp_path)
    cfg["vq_config"] |= {"num_embeddings": N_CODES, "base_channels": 64}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(HFImportError, match="vqmodel.* tensors do not fit the config: size mis"):
        ChameleonModel.from_pretrained(tmp_path)


def test_imported_model_trains_a_step(pair):
    """The import is a recipe model: its loss runs on samples at the VQ's resolution, targets
    in Chameleon's ids, and reaches the backbone (the VQ stays frozen)."""
    _, _, path = pair
    model = ChameleonModel.from_pretrained(path).train()
    samples = [
        Sample([Image(picture(5)), Text("w30 w31")], targets=(1,), task="vqa"),
        Sample([Text("w32 w33"), Image(picture(6))], targets=(1,), task="t2i"),
    ]
    out = model.loss(samples, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and {"loss_text", "loss_image"} <= out.keys()
    w = model.backbone.tok_embeddings.weight
    assert w.grad is not None and w.grad[CODE_IDS].abs().sum() > 0
    assert not any(p.requires_grad for p in model.image_tok.parameters())
