import pytest
import torch

from unimm.checkpoint import load_tensors, read_json, save_tensors, write_directory, write_json


def test_write_directory_replaces_atomically(tmp_path):
    target = tmp_path / "ckpt"
    write_directory(target, lambda d: write_json(d / "config.json", {"v": 1}))
    assert read_json(target / "config.json") == {"v": 1}

    def failing(d):
        write_json(d / "config.json", {"v": 2})
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_directory(target, failing)
    # The good checkpoint is untouched and no temporary directory is left behind.
    assert read_json(target / "config.json") == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_tensors_round_trip_and_corruption(tmp_path):
    t = {"w": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(t, tmp_path / "m.safetensors")
    back = load_tensors(tmp_path / "m.safetensors")
    assert torch.equal(back["w"], t["w"]) and torch.equal(back["b"], t["b"])
    (tmp_path / "m.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="corrupt weights file"):
        load_tensors(tmp_path / "m.safetensors")
    with pytest.raises(ValueError, match="missing weights file"):
        load_tensors(tmp_path / "none.safetensors")


def test_read_json_errors(tmp_path):
    (tmp_path / "c.json").write_text("[1, 2")
    with pytest.raises(ValueError, match="corrupt JSON"):
        read_json(tmp_path / "c.json")
    with pytest.raises(ValueError, match="missing file"):
        read_json(tmp_path / "nope.json")
