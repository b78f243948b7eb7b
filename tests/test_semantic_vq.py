"""Semantic discrete tokens (VILA-U style): a VQ tokenizer trained with reconstruction plus a
contrastive text-alignment loss on its quantised latents (unimm.tokenizers.semantic_vq).

tests/assets/golden_vq_losses.json holds the per-step losses of the plain trainer's seeded
12-step tiny run (`_step_losses`), written before the alignment existed. Regenerate it only for
a change meant to alter plain VQ training, and say why in the commit message:
    UNIMM_UPDATE_GOLDEN=1 PYTHONPATH=src .venv/bin/python -m pytest tests/test_semantic_vq.py
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from unimm.tokenizers.semantic_vq import (
    ALIGNER_DIR,
    AlignConfig,
    CodeAligner,
    QuantisedEmbedder,
)
from unimm.tokenizers.vq import VQ_PRESETS, VQTokenizer

pytest.importorskip("unimm.world.detector")

from unimm.train.tokenizer_trainer import (  # noqa: E402
    probe_alignment,
    render_batch,
    train_vq,
    vq_loss,
)
from unimm.world.language import caption  # noqa: E402

GOLDEN = Path(__file__).parent / "assets" / "golden_vq_losses.json"
TINY_ALIGN = AlignConfig(dim=32, n_heads=2, text_dim=32, text_layers=1, embed_dim=32)

# How close another machine's curve comes to the golden one. train_vq runs under bf16 autocast
# and FSQ rounds the latents to a grid, so a last-bit difference in one bf16 product (another
# CPU's kernel) can move a code, and from there the curves part. Measured against the golden
# file (written on AMD Zen 4, one thread): Intel Sapphire Rapids max rel 2e-4, under 1e-6 on
# steps 1-4; two threads 2e-7; oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA=AVX2, the path of a CPU
# without AVX-512 such as Zen 3) 2.3e-2 by step 10 but 2e-5 on steps 1-4. For comparison, a 1 %
# larger learning rate moves step 4 by 4e-4, a warmup of 0.2 instead of 0.1 step 3 by 1e-2 and
# ink_weight=0.1 step 1 by 8e-2. So the first steps are held tight (10x the worst measured,
# which catches those), the whole curve loosely (2x the worst measured: a curve of another shape).
EARLY_STEPS, EARLY_REL = 4, 2e-4
CURVE_REL = 5e-2


def _step_losses(tmp_path: Path, **kw) -> tuple[list[dict], dict]:
    """The per-step log of a seeded 12-step tiny run (the golden file's settings)."""
    entries: list[dict] = []
    m = train_vq(
        VQ_PRESETS["tiny"](),
        tmp_path,
        steps=12,
        batch_size=8,
        lr=3e-3,
        progress=False,
        eval_n=4,
        log=entries.append,
        log_every=1,
        **kw,
    )
    return [e for e in entries if "loss" in e], m


def test_align_weight_zero_is_the_plain_tokenizer_training(tmp_path) -> None:
    plain, m = _step_losses(tmp_path / "plain", align_weight=0.0)
    losses = [e["loss"] for e in plain]
    if os.environ.get("UNIMM_UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(losses, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    assert losses[:EARLY_STEPS] == pytest.approx(golden[:EARLY_STEPS], rel=EARLY_REL, abs=0)
    assert losses == pytest.approx(golden, rel=CURVE_REL, abs=0)
    assert "retrieval" not in m and not (tmp_path / "plain" / ALIGNER_DIR).exists()
    # With the alignment on: same initial tokenizer and the same images (captions draw from
    # their own seed), so the first step's reconstruction loss is the plain run's exactly (the
    # same kernels on the same inputs, in this process); after that the codes move under the
    # extra gradient and the losses part ways.
    aligned, m = _step_losses(tmp_path / "aligned", align_weight=0.5, align=TINY_ALIGN)
    recon = [e["recon_loss"] for e in aligned]
    assert recon[0] == losses[0]
    assert all(abs(a - b) > 1e-7 for a, b in zip(recon[2:], losses[2:]))
    assert aligned[0]["loss"] == pytest.approx(recon[0] + 0.5 * aligned[0]["align_loss"])


def test_alignment_loss_falls_on_a_fixed_batch_and_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    tok = VQTokenizer(VQ_PRESETS["tiny"]()).train()
    aligner = CodeAligner(TINY_ALIGN, tok.fsq.dim, 64).train()
    rng = random.Random(3)
    x, scenes = render_batch(rng, 8, 64, max_objects=3)
    texts = [caption(s, rng) for s in scenes]
    # The alignment's gradient reaches the encoder through FSQ's straight-through rounding
    # (that is what makes the codes semantic) and never the pixel decoder.
    tok.zero_grad()
    vq_loss(tok, x, aligner=aligner, texts=texts, align_weight=1.0)["align"].backward()
    assert tok.enc_in.weight.grad.abs().sum() > 0
    assert tok.dec_in.weight.grad is None
    params = [*tok.parameters(), *aligner.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3)
    # Fitting the 8 pairs, the CLIP loss first sits at chance (ln 8) while the pooled code
    # embeddings are nearly alike, and leaves it after a number of steps that depends on the
    # seed and on float rounding, so on the CPU (after a fixed 40 steps: 0.48 x its start here,
    # 0.57 on an Intel Xeon). So: below 0.8 ln 8 within 200 steps. Over init seeds 0-59 the
    # slowest took 105 steps (seed 40; then 93, 84), seed 0 takes 17; untrained (lr 0) the loss
    # stays at its start, above ln 8 (AMD Zen 4, 2026-12-06).
    bound = 0.8 * math.log(len(texts))
    for _ in range(200):
        out = vq_loss(tok, x, aligner=aligner, texts=texts, align_weight=1.0)
        if out["align"].item() < bound:
            break
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    assert out["align"].item() < bound
    with pytest.raises(ValueError, match="one caption per image"):
        vq_loss(tok, x, aligner=aligner, texts=texts[:3], align_weight=1.0)


def test_semantic_tokenizer_saves_loads_and_chameleon_builds_on_it(tmp_path) -> None:
    from unimm.presets import get_run_config
    from unimm.recipes.chameleon import ChameleonModel
    from unimm.recipes.parts import Parts
    from unimm.tokenizers.text import TextTokenizer

    m = train_vq(
        VQ_PRESETS["tiny"](),
        tmp_path,
        steps=3,
        batch_size=8,
        progress=False,
        eval_n=10,
        align_weight=0.5,
        align=TINY_ALIGN,
    )
    for key in ("retrieval", "retrieval_heldout"):
        r = m[key]
        assert r["n"] == 10 and 0.0 <= r["image_to_text"] <= 1.0 and r["chance"] == 0.01
    assert {"psnr", "redetect_rate", "final_align_loss"} <= set(m) and m["align_weight"] == 0.5
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["retrieval"] == m["retrieval"]
    # The folder is an ordinary VQ tokenizer, plus the training-time aligner beside it.
    tok = VQTokenizer.from_pretrained(tmp_path)
    aligner = CodeAligner.from_pretrained(tmp_path / ALIGNER_DIR)
    assert aligner.config == TINY_ALIGN
    x, scenes = render_batch(random.Random(5), 4, 64)
    texts = [caption(s, random.Random(0)) for s in scenes]
    emb = QuantisedEmbedder(tok, aligner)
    a, b = emb.embed_images(x), emb.embed_texts(texts)
    assert a.shape == b.shape == (4, 32)
    assert torch.allclose(a.norm(dim=-1), torch.ones(4))
    # chameleon consumes it unchanged: vocabulary = text + codebook, trains and samples
    cfg = get_run_config("tiny")
    text = TextTokenizer.train(texts * 20, cfg.text_vocab_size)
    cfg = replace(cfg, vq=tok.config, model=replace(cfg.model, vocab_size=text.vocab_size + 64))
    model = ChameleonModel(Parts(cfg, text, tok.requires_grad_(False)))
    from tests.test_chameleon import samples

    assert torch.isfinite(model.train().loss(samples(4), torch.Generator())["loss"])
    imgs = model.eval().generate_images(["a red circle"], n_per_prompt=1, seed=0)
    assert imgs[0][0].shape == (64, 64, 3)


def test_probe_trains_only_the_aligner(tmp_path) -> None:
    tok = VQTokenizer(VQ_PRESETS["tiny"]())
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    m = probe_alignment(tok, steps=3, batch_size=8, align=TINY_ALIGN, eval_n=10)
    assert m["steps"] == 3 and m["retrieval"]["n"] == 10 and "retrieval_heldout" in m
    assert all(torch.equal(before[k], v) for k, v in tok.state_dict().items())


def test_bad_align_settings_raise(tmp_path) -> None:
    with pytest.raises(ValueError, match="align_weight"):
        train_vq(VQ_PRESETS["tiny"](), tmp_path, steps=1, align_weight=-1.0, progress=False)
    with pytest.raises(ValueError, match="n_heads"):
        AlignConfig(dim=30, n_heads=4)
    aligner = CodeAligner(TINY_ALIGN, 3, 64)
    with pytest.raises(ValueError, match="latents shaped"):
        aligner.embed_codes(torch.zeros(2, 16, 3))
