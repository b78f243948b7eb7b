"""KL-VAE continuous tokenizer: shapes, determinism, normalisation, checkpoints, training."""

from __future__ import annotations

import pytest
import torch

from unimm.tokenizers.vae import VAE_PRESETS, VAEConfig, VAETokenizer
from unimm.train.vae_trainer import evaluate_vae, train_vae


def tiny() -> VAETokenizer:
    torch.manual_seed(0)
    return VAETokenizer(VAE_PRESETS["tiny"]()).eval()


def test_encode_decode_shapes_and_determinism():
    tok = tiny()
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    z = tok.encode(x)
    assert z.shape == (3, 64, 4) and tok.grid == (8, 8) and tok.latent_dim == 4
    assert torch.equal(z, tok.encode(x))  # the posterior mean, no sampling
    img = tok.decode(z)
    assert img.shape == (3, 3, 64, 64) and torch.equal(img, tok.decode(z))
    assert img.min() >= -1 and img.max() <= 1
    # batched equals one by one
    assert torch.allclose(tok.encode(x[1:2]), z[1:2], atol=1e-5)
    with pytest.raises(ValueError, match="expected images"):
        tok.encode(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="expected latents"):
        tok.decode(torch.zeros(1, 64, 5))


def test_fit_normalises_latents_and_decode_inverts_it():
    tok = tiny()
    torch.nn.init.normal_(tok.enc_out.weight, std=0.5)
    x = torch.rand(16, 3, 64, 64) * 2 - 1
    raw, _ = tok.posterior(x)
    tok.fit(x)
    z = tok.encode(x)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-3
    assert torch.allclose(tok.decode(z), tok.decode_raw(raw).clamp(-1, 1), atol=1e-4)


def test_save_load_round_trip(tmp_path):
    tok = tiny()
    tok.fit(torch.rand(4, 3, 64, 64))
    tok.save_pretrained(tmp_path)
    again = VAETokenizer.from_pretrained(tmp_path)
    x = torch.rand(2, 3, 64, 64)
    assert again.config == tok.config and torch.equal(again.encode(x), tok.encode(x))


def test_config_errors():
    with pytest.raises(ValueError):
        VAEConfig(patch=7)
    with pytest.raises(ValueError):
        VAEConfig(latent_channels=0)


def test_training_lowers_the_reconstruction_error(tmp_path):
    before = evaluate_vae(tiny(), n=8)  # the 8 held-out scenes train_vae's metrics use
    m = train_vae(VAE_PRESETS["tiny"](), tmp_path, steps=30, batch_size=4, eval_n=8, progress=False)
    assert m["steps"] == 30 and m["latent_scale"] > 0 and 0 <= m["redetect_rate"] <= 1
    # The last training batch's MSE does not tell trained from untrained (0.08 to 0.21 after 30
    # steps over seeds 0-19, 0.20 to 0.33 at lr 0 over seeds 0-2); PSNR on the same held-out
    # scenes does: over seeds 0-19 (init and data) the smallest gain was 0.44 dB, and 0 dB at
    # lr 0 (AMD Zen 4, 2026-12-06).
    assert m["psnr"] > before["psnr"] + 0.2
    assert (tmp_path / "vae_config.json").is_file()
    loaded = VAETokenizer.from_pretrained(tmp_path)
    assert loaded.config.scale == m["latent_scale"]
