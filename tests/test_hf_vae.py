"""A diffusers AutoencoderKL saved to disk, loaded as unimm's continuous tokenizer: encode /
decode equal diffusers' own calls with the scaling convention applied."""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_vae import DiffusersVAE  # noqa: E402
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
        **overrides,
    )
    return diffusers.AutoencoderKL(**cfg).eval()


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
