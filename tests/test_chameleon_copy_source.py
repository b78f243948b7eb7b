"""chameleon.copy_source: the input that is about to produce an image code carries the code the
previous image has at that cell (an edit's source, for its target)."""

from __future__ import annotations

import pytest
import torch

from tests.test_chameleon import rand_image
from tests.test_chameleon_loss_options import make_model
from unimm.data.sample import Image, Sample, Text
from unimm.paradigms.autoregressive import generate
from unimm.recipes.base import SamplingConfig


def edit_prompt(model, seed: int = 4) -> list[int]:
    return model._prompt_ids([Image(rand_image(seed)), Text("make it red")], "image")


def test_zero_table_is_the_plain_model():
    model = make_model(copy_source=True)
    ids = torch.tensor([edit_prompt(model)])
    with torch.no_grad():
        on = model(ids)
        model.copy_source = False
        off = model(ids)
    assert torch.equal(on, off)


def test_each_next_code_gets_the_previous_image_code_at_that_cell():
    model = make_model(copy_source=True)
    with torch.no_grad():
        model.copy_embed.weight.normal_()
    n, t = model.image_tokens, model.text_tok
    first = torch.randint(0, model.image_tok.codebook_size, (n,))
    second = torch.randint(0, model.image_tok.codebook_size, (n,))
    text = t.encode("make it red")
    ids = [t.bos_id, t.boi_id, *(first + model.image_offset).tolist(), t.eoi_id, *text] + [
        t.boi_id,
        *(second + model.image_offset).tolist(),
        t.eoi_id,
    ]
    with torch.no_grad():
        source = model.source_codes(torch.tensor([ids]), torch.zeros(1, dtype=torch.long), None)
        got = model.copy_input(*source)[0]
    want = torch.zeros_like(got)
    boi2 = 2 + n + 1 + len(text)  # the second image's <boi>
    want[boi2] = model.copy_embed.weight[first[0]]
    for i in range(n - 1):  # code i of the second image is followed by code i + 1
        want[boi2 + 1 + i] = model.copy_embed.weight[first[i + 1]]
    assert torch.equal(got, want)  # nothing before the second image, nothing after its last code


@pytest.mark.parametrize("use_pos2d,gate", [(True, False), (False, False), (True, True)])
def test_cached_generation_equals_recomputation(use_pos2d, gate):
    model = make_model(copy_source=True, image_pos_embed=use_pos2d, copy_gate=gate)
    with torch.no_grad():
        model.copy_embed.weight.normal_(0, 1.0)
    prompts = [edit_prompt(model, 4), model._prompt_ids([Text("a red circle")], "image")]
    codes = range(model.image_offset, model.image_offset + model.image_tok.codebook_size)
    kw = dict(temperature=0.0, allowed_ids=codes)
    cached = generate(model, prompts, model.image_tokens, use_cache=True, **kw)
    fresh = generate(model, prompts, model.image_tokens, use_cache=False, **kw)
    assert cached == fresh
    with torch.no_grad():  # the copy matters, so the equality is not vacuous
        model.copy_embed.weight.zero_()
    assert generate(model, prompts, model.image_tokens, **kw)[0] != cached[0]


def test_an_edit_learns_to_copy_its_source():
    # Target = source, on fresh random images every step, so nothing can be memorised: only a
    # model that reads the source at the cell it draws can lower the target's loss.
    def final_loss(copy: bool, gate: bool = False, steps: int = 80) -> float:
        model = make_model(copy_source=copy, copy_gate=gate).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for step in range(steps):
            images = [Image(rand_image(100 + 4 * step + i)) for i in range(4)]
            batch = [Sample([im, Text("keep it"), im], (2,), "edit") for im in images]
            loss = model.loss(batch, torch.Generator().manual_seed(step))["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    with_copy, without = final_loss(True), final_loss(False)
    assert with_copy < 0.1 * without, (with_copy, without)  # about 0.04 against 3.0
    # the copy switch needs one scalar per position: far fewer steps
    gated, plain = final_loss(True, gate=True, steps=20), final_loss(True, steps=20)
    assert gated < 0.5 * plain, (gated, plain)  # about 0.04 against 3.1


def test_the_copy_gate_mixes_a_point_mass_on_the_source_code_into_a_distribution():
    model = make_model(copy_source=True, copy_gate=True)
    with torch.no_grad():
        model.copy_gate_proj.bias.fill_(0.5)
    n, t = model.image_tokens, model.text_tok
    first = torch.randint(0, model.image_tok.codebook_size, (n,))
    second = torch.randint(0, model.image_tok.codebook_size, (n,))
    ids = [t.bos_id, t.boi_id, *(first + model.image_offset).tolist(), t.eoi_id]
    ids += [*t.encode("keep it"), t.boi_id, *(second + model.image_offset).tolist(), t.eoi_id]
    with torch.no_grad():
        out = model(torch.tensor([ids]))[0]
        model.copy_gate = False
        plain = model(torch.tensor([ids]))[0].float()
    boi2 = len(ids) - n - 2
    g = torch.sigmoid(torch.tensor(0.5))
    for pos in range(boi2, boi2 + n):  # the positions that produce the second image's codes
        src = model.image_offset + int(first[pos - boi2])
        assert torch.allclose(out[pos].logsumexp(-1), torch.tensor(0.0), atol=1e-5)
        p_plain = plain[pos].softmax(-1)
        want = (1 - g) * p_plain
        want[src] += g
        assert torch.allclose(out[pos].exp(), want, atol=1e-6)
    # elsewhere (the first image, which has no source, and the text) the plain logits
    assert torch.equal(out[:boi2].float(), plain[:boi2])
    with pytest.raises(ValueError, match="copy_gate needs chameleon.copy_source"):
        make_model(copy_gate=True)


def test_edit_sampling_runs_and_the_option_is_refused_elsewhere():
    model = make_model(copy_source=True)
    out = model.edit_images([rand_image(1)], ["make it red"], SamplingConfig(cfg_scale=2.0))
    assert out[0].shape == (64, 64, 3)
    with pytest.raises(ValueError, match="copy_source"):
        make_model(copy_source=True, code_ids="tokenizer")


def test_a_finetune_can_switch_the_copy_on(tiny_run, tmp_path):
    from unimm.pipeline import finetune_run, load_checkpoint

    start, _ = load_checkpoint(tiny_run)
    switch = ["chameleon.copy_source=true", "chameleon.copy_gate=true", "train.steps=1"]
    tuned = finetune_run(tiny_run, tmp_path / "ft", switch, progress=False)
    assert tuned.copy_source and tuned.copy_gate and not start.copy_source
    back, _ = load_checkpoint(tmp_path / "ft")
    assert back.copy_source and torch.equal(back.copy_embed.weight, tuned.copy_embed.weight)
    assert torch.equal(back.copy_gate_proj.bias, tuned.copy_gate_proj.bias)
    off = ["chameleon.copy_source=false", "chameleon.copy_gate=false"]
    with pytest.raises(ValueError, match="do not carry over"):  # and not off again
        finetune_run(tmp_path / "ft", tmp_path / "ft2", off)
    with pytest.raises(ValueError, match="copy_gate needs chameleon.copy_source"):
        finetune_run(tmp_path / "ft", tmp_path / "ft2", off[:1])


def test_copy_input_noise_touches_only_the_inputs_of_targets_with_a_source():
    from unimm.data.sequence import collate

    model = make_model(copy_source=True, copy_input_noise=0.5).train()
    images = [Image(rand_image(40 + i)) for i in range(8)]
    batch_samples = [Sample([im, Text("keep it"), im], (2,), "edit") for im in images]
    batch_samples += [Sample([Text("a red circle"), images[0]], (1,), "t2i")]
    batch = collate(model.build(batch_samples), model.text_tok.pad_id, device=model.device)
    noisy = model.noisy_copy_inputs(batch, seed=3)
    clean = batch.ids[:, :-1]
    changed = noisy != clean
    n = model.image_tokens
    for r in range(len(batch_samples)):
        codes = model.image_slots(clean[r]).nonzero().flatten()
        if r == len(batch_samples) - 1:  # text-to-image: no source, nothing noised
            assert not changed[r].any()
            continue
        source, target = codes[:n], codes[n:]
        assert not changed[r, source].any()  # the source is read as it is
        assert not changed[r, target[-1]]  # the last code predicts <eoi>, not a code
        assert changed[r].sum() == changed[r, target[:-1]].sum()  # nothing else moves
        assert model.image_slots(noisy[r, target]).all()  # still codes
    share = changed.sum().item() / (8 * (n - 1))
    assert 0.35 < share < 0.6, share  # about half (a random code can be the same code)
    assert torch.equal(model.noisy_copy_inputs(batch, 3), noisy)  # seeded
    model.eval()
    assert torch.equal(model.noisy_copy_inputs(batch, 3), clean)
    with pytest.raises(ValueError, match="copy_input_noise needs chameleon.copy_source"):
        make_model(copy_input_noise=0.5)
