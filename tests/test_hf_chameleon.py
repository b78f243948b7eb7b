"""Hugging Face ChameleonForConditionalGeneration -> unimm: a tiny random model saved to disk;
the unimm backbone's logits, greedy answers, image tokens and image-code generation must match
transformers'."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.hf_tiny import save_chameleon  # noqa: E402
from unimm.interop.backbone_checkpoint import load_backbone  # noqa: E402
from unimm.interop.hf_chameleon import HFChameleon  # noqa: E402
from unimm.interop.hf_files import HFImportError  # noqa: E402

N_CODES, FIRST_CODE, IMAGE, BOI, EOI, VOCAB = 16, 4, 20, 21, 22, 96


def code_name(code: int) -> str:
    return "IMGIMG" + "".join(chr(ord("A") + int(d)) for d in str(code)) + "Z"


def tiny_chameleon(tmp_path):
    vocabulary_map = {f"tok{i}": i for i in range(VOCAB)}
    for c in range(N_CODES):
        vocabulary_map.pop(f"tok{FIRST_CODE + c}")
        vocabulary_map[code_name(c)] = FIRST_CODE + c
    vocabulary_map.update({"<image>": IMAGE, "<racm3:break>": BOI, "<eoss>": EOI})
    return save_chameleon(tmp_path, vocab=VOCAB, codes=N_CODES, vocabulary_map=vocabulary_map)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("chameleon")
    ref = tiny_chameleon(path)
    return ref, HFChameleon.from_pretrained(path), path


def prompt_with_image() -> torch.Tensor:
    text = [1, 30, 31, 32, BOI] + [IMAGE] * 64 + [EOI, 40, 41]
    return torch.tensor([text])


def test_text_logits_match(pair):
    ref, ours, path = pair
    ids = torch.tensor([[1, 30, 45, 60, 2, 77, 33, 90, 50]])
    with torch.no_grad():
        want = ref(ids).logits
    got = ours.logits(ids)
    text = ours.text_ids
    assert (got[..., text] - want[..., text]).abs().max() <= 1e-4
    assert (want[..., ours.image_ids] == torch.finfo(want.dtype).min).all()
    assert torch.equal(load_backbone(path)(ids), got)  # load_backbone dispatches on model_type


def test_image_understanding_matches(pair):
    ref, ours, _ = pair
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        want_tokens = ref.model.get_image_tokens(pixels)
    assert torch.equal(ours.image_tokens(pixels), want_tokens)
    ids = prompt_with_image()
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels).logits
    got = ours.logits(ids, pixels)
    assert (got[..., ours.text_ids] - want[..., ours.text_ids]).abs().max() <= 1e-4
    with torch.no_grad():
        hf = ref.generate(
            input_ids=ids,
            pixel_values=pixels,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )[0, ids.shape[1] :].tolist()
    assert ours.answer(ids, 8, pixels, temperature=0.0)[0] == hf


def test_image_code_generation_matches_greedy_reference(pair):
    ref, ours, _ = pair
    ids = torch.tensor([[1, 30, 31, 32, BOI]])
    codes = ours.generate_image_codes(ids, 6, temperature=0.0)
    assert codes.shape == (1, 6) and codes.min() >= 0 and codes.max() < N_CODES
    seq = ids
    for _ in range(6):  # transformers' own raw logits, restricted to image ids, argmax
        with torch.no_grad():
            hidden = ref.model(input_ids=seq).last_hidden_state[:, -1]
            logits = ref.lm_head(hidden)[0, ours.image_ids]
        seq = torch.cat([seq, ours.image_ids[logits.argmax()].view(1, 1)], dim=1)
    assert (seq[0, 5:] - FIRST_CODE).tolist() == codes[0].tolist()


def test_refuses_swin_norm(tmp_path):
    import json

    tiny_chameleon(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "swin_norm": True}))
    with pytest.raises(HFImportError, match="swin_norm=True"):
        HFChameleon.from_pretrained(tmp_path)
