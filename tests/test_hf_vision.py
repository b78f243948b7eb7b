"""Hugging Face SigLIP / CLIP folders as unimm's semantic encoder: features equal transformers'
own forward on the same pixel values, preprocessing equals the HF image processor, pooling,
embeddings, refusals, checkpoints, and the janus recipe built, trained and saved on one."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers, processors

transformers = pytest.importorskip("transformers")

from tests.test_janus import answer_logits, make_model, vqa_prompt  # noqa: E402
from tests.test_transfusion import CORPUS, rand_image  # noqa: E402
from unimm.data.images import to_tensor  # noqa: E402
from unimm.interop.hf_files import HFImportError  # noqa: E402
from unimm.interop.hf_vision import HFSemanticEncoder  # noqa: E402
from unimm.recipes.janus import JanusModel  # noqa: E402
from unimm.recipes.parts import load_semantic_encoder  # noqa: E402
from unimm.tokenizers.semantic import SemanticConfig, SemanticEncoder  # noqa: E402

VISION = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
TEXT = dict(VISION, vocab_size=64, max_position_embeddings=16)
PAD, UNK, EOS = 0, 1, 2


def tiny_model(kind: str, image_size: int = 32, patch_size: int = 8):
    """A random transformers model of `kind` (the class name), seeded."""
    torch.manual_seed(0)
    vision = dict(VISION, image_size=image_size, patch_size=patch_size)
    if kind == "SiglipVisionModel":
        return transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**vision)).eval()
    if kind == "CLIPVisionModel":
        return transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vision)).eval()
    text = dict(TEXT, pad_token_id=PAD, bos_token_id=EOS, eos_token_id=EOS)
    if kind == "SiglipModel":
        cfg = transformers.SiglipConfig(text_config=text, vision_config=vision)
        return transformers.SiglipModel(cfg).eval()
    cfg = transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    return transformers.CLIPModel(cfg).eval()


def save_tokenizer(path) -> None:
    """A word-level tokenizer.json over the test corpus, </s> appended (both families' towers
    pool at or after the end token)."""
    words = sorted({w for t in CORPUS for w in t.split()})
    vocab = {"<pad>": PAD, "<unk>": UNK, "</s>": EOS} | {w: i + 3 for i, w in enumerate(words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", EOS)]
    )
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="</s>"
    )
    fast.save_pretrained(path)


def hf_folder(tmp_path, kind: str, tokenizer: bool = True, **size):
    model = tiny_model(kind, **size)
    path = tmp_path / kind
    model.save_pretrained(path)
    if tokenizer and kind in ("SiglipModel", "CLIPModel"):
        save_tokenizer(path)
    return model, path


def images(n: int = 2, side: int = 48, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1  # (B, 3, H, W) in [-1, 1]


CLIP_32 = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
KINDS = ["SiglipVisionModel", "SiglipModel", "CLIPVisionModel", "CLIPModel"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layer", ["last", "penultimate"])
def test_features_equal_transformers_forward(tmp_path, kind, layer):
    ref, path = hf_folder(tmp_path, kind)
    enc = HFSemanticEncoder.from_pretrained(path, layer=layer)
    assert enc.grid == (4, 4) and enc.feature_dim == 32  # 32 px / 8 px patches, native grid
    x = images()  # 48 px: resized to the tower's 32
    pixels = enc.preprocess(x)
    assert pixels.shape == (2, 3, 32, 32)
    vision = ref.vision_model if hasattr(ref, "text_model") else ref
    with torch.no_grad():
        out = vision(pixel_values=pixels, output_hidden_states=True)
    want = out.last_hidden_state if layer == "last" else out.hidden_states[-2]
    want = want[:, 1:] if kind.startswith("CLIP") else want  # CLIP's class token dropped
    got = enc.features(x)
    assert got.shape == (2, 16, 32)
    assert (got - want).abs().max() <= 1e-5
    other = "penultimate" if layer == "last" else "last"
    assert not torch.allclose(got, HFSemanticEncoder.from_pretrained(path, layer=other).features(x))


def test_features_pool_to_the_requested_grid(tmp_path):
    _, path = hf_folder(tmp_path, "SiglipVisionModel", image_size=32, patch_size=4)
    native = HFSemanticEncoder.from_pretrained(path)
    x = images()
    full = native.features(x)  # (B, 64, D): the 8 x 8 patch grid
    assert native.grid == (8, 8) and full.shape == (2, 64, 32)
    pooled = HFSemanticEncoder.from_pretrained(path, grid=(4, 4)).features(x)
    assert pooled.shape == (2, 16, 32)
    blocks = full.reshape(2, 4, 2, 4, 2, 32).mean(dim=(2, 4)).reshape(2, 16, 32)  # 2x2 means
    assert (pooled - blocks).abs().max() <= 1e-6
    assert HFSemanticEncoder.from_pretrained(path, grid=3).features(x).shape == (2, 9, 32)
    with pytest.raises(ValueError, match="finer than the checkpoint's 8x8 patch grid"):
        HFSemanticEncoder.from_pretrained(path, grid=16)


@pytest.mark.parametrize(
    "processor",
    [
        lambda: transformers.SiglipImageProcessor(size={"height": 32, "width": 32}),
        lambda: transformers.CLIPImageProcessor(**CLIP_32),
        lambda: transformers.SiglipImageProcessor(
            size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]
        ),
        None,  # no preprocessor_config.json: the family's defaults (CLIP's statistics)
    ],
)
def test_preprocessing_equals_the_hf_image_processor(tmp_path, processor):
    kind = "CLIPVisionModel" if processor is None else "SiglipVisionModel"
    _, path = hf_folder(tmp_path, kind)
    proc = processor() if processor else transformers.CLIPImageProcessor(**CLIP_32)
    if processor is not None:
        proc.save_pretrained(path)
    enc = HFSemanticEncoder.from_pretrained(path)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    want = proc(images=[img], return_tensors="pt")["pixel_values"]
    got = enc.preprocess(to_tensor([img]))
    assert (got - want).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", ["SiglipModel", "CLIPModel"])
def test_embeddings_equal_transformers_features(tmp_path, kind):
    ref, path = hf_folder(tmp_path, kind)
    enc = HFSemanticEncoder.from_pretrained(path)
    x = images()
    with torch.no_grad():
        want = ref.get_image_features(pixel_values=enc.preprocess(x))
    want = getattr(want, "pooler_output", want)  # an output object in transformers 5
    assert (enc.embed_images(x) - F.normalize(want, dim=-1)).abs().max() <= 1e-5
    texts = ["a red circle", "a blue square left of a green triangle"]
    tok = transformers.AutoTokenizer.from_pretrained(path)
    if kind == "SiglipModel":  # trained on full-length padding, pooled at the last position
        enc_t = tok(texts, padding="max_length", max_length=16, return_tensors="pt")
        inputs = {"input_ids": enc_t["input_ids"]}
    else:
        inputs = dict(tok(texts, padding=True, return_tensors="pt"))
    with torch.no_grad():
        want_t = ref.get_text_features(**inputs)
    want_t = F.normalize(getattr(want_t, "pooler_output", want_t), dim=-1)
    got_t = enc.embed_texts(texts)
    assert got_t.shape == (2, want_t.shape[-1]) and (got_t - want_t).abs().max() <= 1e-5
    # a text's embedding does not depend on what it is batched with (padding is inert)
    assert (enc.embed_texts(texts[:1]) - got_t[:1]).abs().max() <= 1e-5


def test_text_needs_a_text_tower_and_its_tokenizer(tmp_path):
    _, path = hf_folder(tmp_path, "SiglipVisionModel")
    vision_only = HFSemanticEncoder.from_pretrained(path)
    with pytest.raises(ValueError, match="vision tower only"):
        vision_only.embed_texts(["a red circle"])
    with pytest.raises(ValueError, match="vision tower only"):
        vision_only.embed_images(images())
    _, path = hf_folder(tmp_path, "CLIPModel", tokenizer=False)
    no_tokenizer = HFSemanticEncoder.from_pretrained(path)
    assert no_tokenizer.embed_images(images()).shape == (2, 16)
    with pytest.raises(ValueError, match="needs the checkpoint's tokenizer"):
        no_tokenizer.embed_texts(["a red circle"])


def test_folders_of_the_wrong_kind_are_refused(tmp_path):
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2,
        )
    )  # fmt: skip
    llama.save_pretrained(tmp_path / "llama")
    with pytest.raises(HFImportError, match="model_type 'llama' is not a SigLIP / CLIP"):
        HFSemanticEncoder.from_pretrained(tmp_path / "llama")
    with pytest.raises(HFImportError, match="not a semantic encoder"):
        load_semantic_encoder(tmp_path / "llama")
    SemanticEncoder(SemanticConfig(dim=32, n_heads=2, text_dim=32)).save_pretrained(tmp_path / "u")
    with pytest.raises(HFImportError, match="config.json"):
        HFSemanticEncoder.from_pretrained(tmp_path / "u")
    assert isinstance(load_semantic_encoder(tmp_path / "u"), SemanticEncoder)
    model, path = hf_folder(tmp_path, "SiglipVisionModel")
    (path / "model.safetensors").unlink()
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    with pytest.raises(HFImportError, match="no .safetensors"):
        HFSemanticEncoder.from_pretrained(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    _, path = hf_folder(tmp_path, "SiglipVisionModel")
    cfg = transformers.SiglipVisionConfig.from_pretrained(path)
    cfg.num_hidden_layers = 4  # the file holds 3 layers
    cfg.save_pretrained(path)
    with pytest.raises(HFImportError, match="do not fit its SiglipVisionModel config"):
        HFSemanticEncoder.from_pretrained(path)


def test_save_load_round_trip(tmp_path):
    _, path = hf_folder(tmp_path, "SiglipModel", image_size=32, patch_size=4)
    transformers.SiglipImageProcessor(image_mean=[0.4, 0.5, 0.6]).save_pretrained(path)
    enc = HFSemanticEncoder.from_pretrained(path, grid=2, layer="penultimate")
    enc.save_pretrained(tmp_path / "saved")
    loaded = load_semantic_encoder(tmp_path / "saved")
    assert isinstance(loaded, HFSemanticEncoder)
    assert loaded.config == enc.config and loaded.grid == (2, 2)
    assert loaded.config.image_mean == pytest.approx([0.4, 0.5, 0.6])
    x, texts = images(), ["a red circle"]
    assert torch.equal(loaded.features(x), enc.features(x))
    assert torch.equal(loaded.embed_texts(texts), enc.embed_texts(texts))
    # The folder stays a Hugging Face one.
    assert isinstance(transformers.SiglipModel.from_pretrained(tmp_path / "saved"), torch.nn.Module)


def test_janus_builds_trains_answers_and_saves_on_an_hf_encoder(tmp_path):
    _, path = hf_folder(tmp_path, "SiglipVisionModel", image_size=32, patch_size=4)  # 8 x 8
    semantic = HFSemanticEncoder.from_pretrained(path)
    model = make_model(semantic=semantic)
    assert model.semantic is semantic and model.und_aligner[0].in_features == 32
    before = answer_logits(model, vqa_prompt())
    assert not torch.allclose(answer_logits(model, vqa_prompt(1)), before)  # the image matters
    from tests.test_transfusion import samples

    model.train()
    out = model.loss(samples(4), torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and not any(p.requires_grad for p in semantic.parameters())
    model.eval()
    q = [rand_image(0)], ["what color?"]
    answer = model.answer(*q)
    assert isinstance(answer[0], str)
    model.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "semantic_encoder" / "hf_semantic.json").is_file()
    loaded = JanusModel.from_pretrained(tmp_path / "ckpt")
    assert isinstance(loaded.semantic, HFSemanticEncoder) and loaded.semantic.grid == (8, 8)
    assert loaded.answer(*q) == answer
    # The tower's weights reach the answer: perturb them and the logits move.
    with torch.no_grad():
        for p in semantic.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    assert not torch.allclose(answer_logits(model, vqa_prompt()), before)


def test_train_run_takes_an_hf_folder_as_semantic_encoder(tmp_path):
    from unimm.pipeline import train_run
    from unimm.recipes.registry import load_model

    _, path = hf_folder(tmp_path, "CLIPVisionModel", image_size=64, patch_size=4)  # 16 x 16
    overrides = ["recipe=janus", "train.steps=2", "vq_train.seconds=1"]
    train_run(tmp_path / "run", "tiny", overrides, progress=False, semantic_encoder=path)
    assert not (tmp_path / "run" / "semantic_encoder").exists()  # nothing trained
    model = load_model(tmp_path / "run" / "checkpoint")
    assert isinstance(model.semantic, HFSemanticEncoder)
    assert model.semantic.grid == model.parts.image.grid == (8, 8)  # pooled 16 x 16 -> 8 x 8
    assert isinstance(model.answer([rand_image(0)], ["what color?"])[0], str)
