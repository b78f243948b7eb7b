"""Hugging Face JanusForConditionalGeneration -> unimm: a tiny random Janus saved to disk; the
language model's logits (text and with an image), greedy text, the generation head's greedy
image codes and the VQ decode must match transformers'."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.hf_tiny import save_janus  # noqa: E402
from unimm.interop.backbone_checkpoint import load_backbone  # noqa: E402
from unimm.interop.hf_janus import HFJanus  # noqa: E402

IMAGE_ID, BOI, VOCAB, D = 90, 91, 96, 32


def tiny_janus(path, tie: bool):
    return save_janus(path, vocab=VOCAB, dim=D, image_id=IMAGE_ID, codes=24, tie=tie)


@pytest.fixture(scope="module", params=[False, True], ids=["untied", "tied"])
def pair(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("janus")
    ref = tiny_janus(path, request.param)
    return ref, HFJanus.from_pretrained(path), path


def test_text_logits_and_greedy_match(pair):
    ref, ours, path = pair
    ids = torch.tensor([[1, 30, 45, 60, 2, 77, 33, 89, 50]])
    with torch.no_grad():
        want = ref(ids).logits
        assert (ours.logits(ids) - want).abs().max() <= 1e-4
        assert (load_backbone(path)(ids) - want).abs().max() <= 1e-4
        hf = ref.generate(
            ids,
            max_new_tokens=8,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            generation_mode="text",
        )[0, ids.shape[1] :].tolist()
    assert ours.answer(ids, 8, temperature=0.0)[0] == hf


def test_logits_with_an_image_match(pair):
    ref, ours, _ = pair
    pixels = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ids = torch.tensor([[1, 30, 31] + [IMAGE_ID] * 16 + [40, 41]])
    with torch.no_grad():
        want = ref(input_ids=ids, pixel_values=pixels).logits
        hf = ref.generate(
            input_ids=ids,
            pixel_values=pixels,
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
            generation_mode="text",
        )[0, ids.shape[1] :].tolist()
    assert (ours.logits(ids, pixels) - want).abs().max() <= 1e-4
    assert ours.answer(ids, 6, pixels, temperature=0.0)[0] == hf


def test_image_codes_match_the_generation_head_and_decode(pair):
    ref, ours, _ = pair
    prompt = torch.tensor([[1, 30, 31, 32, BOI]])
    codes = ours.generate_image_codes(prompt, n_tokens=5, temperature=0.0)
    assert codes.shape == (1, 5)
    embeds = ref.get_input_embeddings()(prompt)
    want = []
    for _ in range(5):  # transformers' modules step by step, no cache: argmax of the gen head
        with torch.no_grad():
            hidden = ref.model.language_model(inputs_embeds=embeds).last_hidden_state[:, -1:]
            code = ref.model.generation_head(hidden)[0, -1].argmax()
            nxt = ref.prepare_embeddings_for_image_generation(code.view(1, 1))
        want.append(int(code))
        embeds = torch.cat([embeds, nxt], dim=1)
    assert codes[0].tolist() == want
    grid = torch.arange(16).remainder(24)[None]  # a full 4x4 grid of codes
    with torch.no_grad():
        pixels = ref.model.vqmodel.decode(grid)
    assert (ours.decode_codes(grid) - pixels.clamp(-1, 1)).abs().max() <= 1e-5


def test_guided_first_code_is_u_plus_s_times_c_minus_u(pair):
    ref, ours, _ = pair
    cond = torch.tensor([[1, 30, 31, 32, BOI]])
    uncond = torch.tensor([[1, 0, 0, 0, BOI]])
    guided = ours.generate_image_codes(cond, uncond, cfg_scale=5.0, n_tokens=3, temperature=0.0)
    with torch.no_grad():
        c, u = (
            ref.model.generation_head(ref.model.language_model(input_ids=x).last_hidden_state)[
                0, -1
            ]
            for x in (cond, uncond)
        )
    assert guided.shape == (1, 3)
    assert int(guided[0, 0]) == int((u + 5.0 * (c - u)).argmax())
