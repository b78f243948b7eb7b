import dataclasses

import pytest

from unimm.config import ConfigError, apply_overrides, from_dict, to_dict
from unimm.presets import RUN_PRESETS, RunConfig, get_run_config


@pytest.mark.parametrize("name", sorted(RUN_PRESETS))
def test_presets_round_trip_through_dict(name):
    cfg = RUN_PRESETS[name]()
    again = from_dict(RunConfig, to_dict(cfg))
    assert to_dict(again) == to_dict(cfg)
    assert again == cfg


def test_overrides_are_typed():
    cfg = get_run_config(
        "tiny",
        ["train.steps=7", "train.lr=0.01", "model.qk_norm=true", "train.tasks=t2i:0.5,vqa:0.5"],
    )
    assert cfg.train.steps == 7 and cfg.train.lr == 0.01 and cfg.model.qk_norm is True
    assert cfg.train.tasks == {"t2i": 0.5, "vqa": 0.5}
    assert cfg.train.max_seconds is None
    cfg = apply_overrides(cfg, ["train.max_seconds=30", "vq.fsq_levels=4,4"])
    assert cfg.train.max_seconds == 30.0 and cfg.vq.fsq_levels == (4, 4)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.stepz=3", "unknown config key"),
        ("train.steps=abc", "must be an integer"),
        ("train.precision=fp8", "must be one of"),
        ("model.qk_norm=3", "true or false"),
        ("nonsense", "key.sub=value"),
        ("model.dim=30", "divisible"),
        ("train.tasks=t2i:0.5,reasn:0.5", "unknown task 'reasn'"),
        ("flow.background_weight=-1", "must be >= 0"),
        ("diffusion.background_weight=-1", "must be >= 0"),
    ],
)
def test_bad_overrides_name_the_problem(override, words):
    with pytest.raises(ConfigError, match=words):
        get_run_config("tiny", [override])


def test_unknown_preset_and_unknown_json_key():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        get_run_config("huge")
    data = to_dict(RUN_PRESETS["tiny"]())
    data["model"]["wings"] = 2
    with pytest.raises(ConfigError, match="model.wings"):
        from_dict(RunConfig, data)


def test_to_dict_is_json_types_only():
    import json

    json.dumps(to_dict(RUN_PRESETS["small"]()))
    assert dataclasses.is_dataclass(RUN_PRESETS["small"]().model)
