"""A diffusers AutoencoderKL saved to disk, loaded as unimm's continuous tokenizer: encode /
decode equal diffusers' own calls with the scaling convention applied."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_vae import DiffusersVAE, DiffusersVAETokens  # noqa: E402
from unimm.tokenizers.continuous import ContinuousTokenizer  # noqa: E402


def tiny_vae(**overrides):
    torch.manual_seed(0)
    cfg = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=16,
        scaling_factor=0.3,
    )
    return diffusers.AutoencoderKL(**{**cfg, **overrides}).eval()


def tiny_vae_x8(**overrides):
    """Downsampling by 8 (as SD's VAE), so a 64 px world image is an 8 x 8 grid of latents."""
    return tiny_vae(
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        sample_size=64,
        **overrides,
    )


@pytest.mark.parametrize("shift", [None, 0.25])
def test_encode_decode_match_diffusers(tmp_path, shift):
    ref = tiny_vae(shift_factor=shift)
    ref.save_pretrained(tmp_path / "pipe" / "vae")  # a pipeline folder: the VAE sits in vae/
    tok = DiffusersVAE.from_pretrained(tmp_path / "pipe")
    assert isinstance(tok, ContinuousTokenizer)
    assert (tok.latent_channels, tok.downsample) == (4, 2)
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = tok.encode(images)
    assert z.shape == (2, 4, 8, 8)
    with torch.no_grad():
        mean = ref.encode(images).latent_dist.mean
        want_z = (mean - (shift or 0.0)) * 0.3
        assert (z - want_z).abs().max() <= 1e-5
        want_x = ref.decode(mean).sample.clamp(-1, 1)
    assert (tok.decode(z) - want_x).abs().max() <= 1e-5
    s1 = tok.encode(images, torch.Generator().manual_seed(3))
    s2 = tok.encode(images, torch.Generator().manual_seed(3))
    assert torch.equal(s1, s2) and not torch.equal(s1, z)  # seeded sampling from the posterior


def test_bad_inputs_are_refused(tmp_path):
    tiny_vae().save_pretrained(tmp_path)
    tok = DiffusersVAE.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="multiples of 2"):
        tok.encode(torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match=r"latents must be \(B, 4, H, W\)"):
        tok.decode(torch.zeros(1, 3, 8, 8))
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DModel"}))
    with pytest.raises(HFImportError, match="no diffusers AutoencoderKL"):
        DiffusersVAE.from_pretrained(tmp_path)


def test_tokens_view_is_the_latent_grid_in_raster_order(tmp_path):
    tiny_vae_x8(shift_factor=0.1).save_pretrained(tmp_path / "vae")
    vae = DiffusersVAE.from_pretrained(tmp_path / "vae")
    tok = DiffusersVAETokens.from_pretrained(tmp_path / "vae")
    assert (tok.grid, tok.latent_dim, tok.config.resolution) == ((8, 8), 4, 64)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z = vae.encode(images)  # (2, 4, 8, 8)
    tokens = tok.encode(images)
    assert tokens.shape == (2, 64, 4)
    assert torch.equal(tokens[:, 8 * 2 + 3], z[:, :, 2, 3])  # token r * w + c is cell (r, c)
    assert torch.equal(tok.decode(tokens), vae.decode(z))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        tok.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 64, 4\)"):
        tok.decode(torch.zeros(1, 16, 4))
    with pytest.raises(ValueError, match="not a multiple"):
        DiffusersVAETokens.from_pretrained(tmp_path / "vae", resolution=60)
    tok.save_pretrained(tmp_path / "copy")  # diffusers files + the resolution it was used at
    again = DiffusersVAETokens.from_pretrained(tmp_path / "copy")
    assert again.config == tok.config and torch.equal(again.encode(images), tokens)
    assert DiffusersVAETokens.from_pretrained(tmp_path / "vae", resolution=32).grid == (4, 4)


@pytest.mark.parametrize("recipe", ["transfusion", "janusflow"])
def test_continuous_recipes_train_and_sample_on_a_diffusers_vae(tmp_path, recipe):
    from dataclasses import replace

    from tests.test_transfusion import CORPUS, samples
    from unimm.presets import get_run_config
    from unimm.recipes.parts import Parts
    from unimm.recipes.registry import build_model, load_model
    from unimm.tokenizers.text import TextTokenizer

    tiny_vae_x8().save_pretrained(tmp_path / "vae")
    image = DiffusersVAETokens.from_pretrained(tmp_path / "vae")
    cfg = get_run_config("tiny", [f"recipe={recipe}", "flow.num_steps=2"])
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size))
    torch.manual_seed(0)
    model = build_model(Parts(cfg, text, image)).train()
    out = model.loss(samples(4), torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and float(out["loss_image"]) > 0
    out["loss"].backward()
    head = [p.grad for n, p in model.named_parameters() if n.startswith("image_out.")]
    assert sum(float(g.abs().sum()) for g in head if g is not None) > 0  # the flow loss trains
    assert not any(p.requires_grad for p in image.parameters())  # the VAE stays frozen
    model.save_pretrained(tmp_path / "ckpt")
    again = load_model(tmp_path / "ckpt")
    assert isinstance(again.image_tok, DiffusersVAETokens)
    model.eval()
    a = model.generate_images(["a red circle"], n_per_prompt=1, seed=0)[0][0]
    b = again.generate_images(["a red circle"], n_per_prompt=1, seed=0)[0][0]
    assert a.shape == (64, 64, 3) and (a == b).all()


def test_pipeline_trains_transfusion_on_a_diffusers_vae_folder(tmp_path):
    from unimm.pipeline import load_checkpoint, train_run

    tiny_vae_x8().save_pretrained(tmp_path / "sd" / "vae")  # a diffusers pipeline folder
    overrides = ["recipe=transfusion", "train.steps=1", "flow.num_steps=2"]
    train_run(tmp_path / "run", "tiny", overrides, image_tokenizer=tmp_path / "sd", progress=False)
    assert (tmp_path / "run" / "image_tokenizer" / "diffusers_vae.json").is_file()
    model, _ = load_checkpoint(tmp_path / "run")
    assert isinstance(model.image_tok, DiffusersVAETokens) and model.image_tok.grid == (8, 8)
    assert model.generate_images(["a red circle"], n_per_prompt=1)[0][0].shape == (64, 64, 3)
