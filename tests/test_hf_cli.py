"""`unimm import / export / finetune` and from_pretrained on a Hugging Face folder."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.test_hf_llama import tiny_hf  # noqa: E402
from tests.test_hf_unified import hf_llm_folder  # noqa: E402
from unimm.cli import main  # noqa: E402
from unimm.interop.backbone_checkpoint import load_backbone  # noqa: E402
from unimm.presets import get_run_config  # noqa: E402
from unimm.recipes.chameleon import ChameleonModel  # noqa: E402
from unimm.tokenizers.vq import VQTokenizer  # noqa: E402


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("cmd", ["import", "export", "finetune"])
def test_interop_commands_have_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: unimm " + cmd in capsys.readouterr().out


def test_import_backbone_then_export_round_trip(tmp_path, capsys):
    ref = tiny_hf("qwen2")
    ref.save_pretrained(tmp_path / "hf", max_shard_size="20KB")
    code, out, err = run(capsys, "import", tmp_path / "hf", tmp_path / "bb", "--kind", "backbone")
    assert code == 0, err
    ids = torch.arange(12)[None]
    with torch.no_grad():
        want = ref(ids).logits
        assert (load_backbone(tmp_path / "bb")(ids) - want).abs().max() <= 1e-4
        code, _, err = run(capsys, "export", tmp_path / "bb", tmp_path / "out")
        assert code == 0, err
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out")
        assert (back(ids).logits - want).abs().max() <= 1e-4


def test_import_chameleon_and_finetune(tmp_path, capsys):
    (tmp_path / "llm").mkdir()
    hf_llm_folder(tmp_path / "llm")
    VQTokenizer(get_run_config("tiny").vq).save_pretrained(tmp_path / "vq")
    code, _, err = run(capsys, "import", tmp_path / "llm", tmp_path / "ck", "--kind", "chameleon")
    assert code == 2 and "needs --image-tokenizer" in err
    code, _, err = run(
        capsys,
        "import",
        tmp_path / "llm",
        tmp_path / "ck",
        "--kind",
        "chameleon",
        "--image-tokenizer",
        tmp_path / "vq",
        "--preset",
        "tiny",
    )
    assert code == 0, err
    code, _, err = run(
        capsys,
        "finetune",
        "--init",
        tmp_path / "ck",
        "--out",
        tmp_path / "ft",
        "train.steps=1",
        "train.batch_size=2",
        "train.log_every=1",
    )
    assert code == 0, err
    tuned = ChameleonModel.from_pretrained(tmp_path / "ft" / "checkpoint")
    start = ChameleonModel.from_pretrained(tmp_path / "ck")
    assert not torch.equal(tuned.backbone.norm.weight, start.backbone.norm.weight)
    code, _, err = run(capsys, "export", tmp_path / "ft", tmp_path / "hf_out")  # a run dir
    assert code == 0, err
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf_out")
    ids = torch.arange(40)[None]  # text ids: the 2-D image embedding plays no part
    with torch.no_grad():
        assert (back(ids).logits - tuned.backbone(ids)).abs().max() <= 1e-4
    code, _, err = run(
        capsys, "finetune", "--init", tmp_path / "ck", "--out", tmp_path / "x", "model.dim=8"
    )
    assert code == 2 and "only takes train.*, data.* and model.max_seq_len overrides" in err


def test_from_pretrained_accepts_an_hf_folder(tmp_path, capsys):
    (tmp_path / "llm").mkdir()
    hf_llm_folder(tmp_path / "llm")
    VQTokenizer(get_run_config("tiny").vq).save_pretrained(tmp_path / "vq")
    model = ChameleonModel.from_pretrained(tmp_path / "llm", image_tokenizer=tmp_path / "vq")
    assert model.image_offset == model.text_tok.vocab_size
    with pytest.raises(ValueError, match="pass image_tokenizer="):
        ChameleonModel.from_pretrained(tmp_path / "llm")
    code, _, err = run(capsys, "generate", tmp_path / "llm", "a red circle")
    assert code == 2 and "Hugging Face model folder, not a unimm checkpoint" in err


def test_import_of_a_missing_folder_fails_in_one_line(tmp_path, capsys):
    code, _, err = run(
        capsys, "import", tmp_path / "no" / "such", tmp_path / "d", "--kind", "backbone"
    )
    assert code == 2 and "is not a folder" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_hub_id_is_fetched_with_safe_patterns_only(tmp_path, capsys, monkeypatch):
    """An `org/name` that is not a local folder goes through huggingface_hub.snapshot_download
    (replaced here by a local copy: no network), asking for no pickled files."""
    import huggingface_hub

    ref = tiny_hf("llama")
    ref.save_pretrained(tmp_path / "snapshot")
    (tmp_path / "llm").mkdir()
    hf_llm_folder(tmp_path / "llm")
    VQTokenizer(get_run_config("tiny").vq).save_pretrained(tmp_path / "vq")
    calls = []

    def fake_download(repo_id, allow_patterns=None, **kwargs):
        calls.append((repo_id, allow_patterns))
        return str(tmp_path / ("llm" if repo_id == "org/with-tokenizer" else "snapshot"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.chdir(tmp_path)  # so that "org/tiny-llama" is not a local folder by accident
    code, _, err = run(capsys, "import", "org/tiny-llama", tmp_path / "bb", "--kind", "backbone")
    assert code == 0, err
    repo_id, patterns = calls[0]
    assert repo_id == "org/tiny-llama"
    assert patterns and all(p.endswith((".json", ".safetensors", ".model")) for p in patterns)
    ids = torch.arange(12)[None]
    with torch.no_grad():
        assert (load_backbone(tmp_path / "bb")(ids) - ref(ids).logits).abs().max() <= 1e-4
    model = ChameleonModel.from_pretrained("org/with-tokenizer", image_tokenizer=tmp_path / "vq")
    assert calls[-1][0] == "org/with-tokenizer"
    assert model.image_offset == model.text_tok.vocab_size

    def offline(repo_id, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    code, _, err = run(capsys, "import", "org/tiny-llama", tmp_path / "d", "--kind", "backbone")
    assert code == 2 and "could not be downloaded: network unreachable" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "d").exists()
