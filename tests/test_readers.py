"""Streaming readers: exported folder + JSONL, WebDataset shards, mixture; bad samples counted."""

from __future__ import annotations

import io
import json
from itertools import islice

import numpy as np
import pytest
import webdataset as wds
from PIL import Image as PILImage

from unimm.data.readers import BadSamples, build_source, jsonl_folder, mixture, webdataset_shards
from unimm.data.sample import Image, Text
from unimm.presets import get_run_config
from unimm.world.export import export_world
from unimm.world.tasks import world_samples


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def same(a, b) -> bool:
    if a.task != b.task or a.targets != b.targets or len(a.segments) != len(b.segments):
        return False
    for x, y in zip(a.segments, b.segments, strict=True):
        if isinstance(x, Text) != isinstance(y, Text):
            return False
        if isinstance(x, Text) and x.text != y.text:
            return False
        if isinstance(x, Image) and not np.array_equal(x.pixels, y.pixels):
            return False
    return True


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("w") / "export"
    export_world(out, 6, progress=False)
    lines = (out / "samples.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    (out / next(s["image"] for s in rec["segments"] if "image" in s)).write_bytes(b"not a png")
    rec = json.loads(lines[3])
    for s in rec["segments"]:
        if "text" in s:
            s["text"] = ""
    lines[3] = json.dumps(rec)
    lines[4] = "{broken json"
    (out / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return out


def test_folder_matches_the_world_it_came_from_and_counts_bad(folder):
    bad = BadSamples()
    got = list(islice(jsonl_folder(folder, 64, bad)(0), 6))
    world = list(islice(world_samples("train", 0), 6))
    # Lines 1, 3 and 4 are bad: each slot is filled by the next good line.
    assert [s.meta["index"] for s in got] == [0, 2, 2, 5, 5, 5]
    assert all(same(g, world[g.meta["index"]]) for g in got)
    assert bad == {"unreadable image": 1, "missing text": 1, "JSON": 1}
    assert "3 bad samples skipped" in bad.report()


def streams_agree(src, n: int) -> None:
    """source(k) continues where source(0) is after k samples, for every k (what the trainer's
    resume and rank slicing rely on), bad samples included."""
    whole = list(islice(src(0), n))
    for k in range(1, n):
        tail = list(islice(src(k), n - k))
        assert [s.meta["index"] for s in tail] == [s.meta["index"] for s in whole[k:]], k
        assert all(same(a, b) for a, b in zip(tail, whole[k:], strict=True)), k


def test_a_source_with_bad_samples_is_a_pure_function_of_the_index(folder, tmp_path):
    streams_agree(jsonl_folder(folder, 64, BadSamples()), 14)  # past the end: epoch 2
    images = [np.full((64, 64, 3), v, dtype=np.uint8) for v in (0, 80, 160)]
    with wds.TarWriter(str(tmp_path / "shard.tar")) as w:
        w.write({"__key__": "a", "png": png(images[0]), "txt": "one"})
        w.write({"__key__": "b", "png": b"broken", "txt": "two"})
        w.write({"__key__": "c", "png": png(images[1]), "txt": ""})
        w.write({"__key__": "d", "png": png(images[2]), "txt": "four"})
    streams_agree(webdataset_shards(str(tmp_path / "shard.tar"), 64, BadSamples()), 9)


def test_records_of_the_wrong_shape_are_bad_samples_not_crashes(tmp_path):
    folder = tmp_path / "export"
    export_world(folder, 2, progress=False)
    good = (folder / "samples.jsonl").read_text().splitlines()
    rec = json.loads(good[0])
    odd = ["[1, 2]", json.dumps({**rec, "targets": 3}), json.dumps({**rec, "segments": ["x"]}),
           json.dumps({**rec, "targets": ["a"]}), b"\xff\xfe".decode("latin-1")]  # fmt: skip
    (folder / "samples.jsonl").write_text("\n".join([*odd, good[1]]) + "\n")
    bad = BadSamples()
    got = list(islice(jsonl_folder(folder, 64, bad)(0), 6))
    assert [s.meta["index"] for s in got] == [5] * 6
    assert sum(bad.values()) == 5, bad


def test_another_resolution_is_resized_not_skipped(folder):
    """Images of a size other than the model's follow data.resize (unimm.data.decode); a square
    image is simply scaled, whatever the policy."""
    bad = BadSamples()
    got = list(islice(jsonl_folder(folder, 32, bad)(0), 6))
    world = list(islice(world_samples("train", 0), 6))
    assert [s.meta["index"] for s in got] == [0, 2, 2, 5, 5, 5]
    for g in got:
        for a, b in zip(g.segments, world[g.meta["index"]].segments, strict=True):
            if isinstance(a, Image):
                small = PILImage.fromarray(b.pixels).resize((32, 32), PILImage.Resampling.BICUBIC)
                assert np.array_equal(a.pixels, np.asarray(small))
    assert bad == {"unreadable image": 1, "missing text": 1, "JSON": 1}  # as at 64 px


def test_webdataset_shard_with_a_broken_image(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    with wds.TarWriter(str(tmp_path / "shard-0.tar")) as w:
        w.write({"__key__": "a", "png": png(images[0]), "txt": "a red circle"})
        w.write({"__key__": "b", "png": b"\x89PNG broken", "txt": "a blue square"})
        w.write({"__key__": "c", "png": png(images[2][:4, :40]), "txt": "too small"})
        w.write({"__key__": "d", "png": png(images[3]), "txt": "a green triangle"})
    bad = BadSamples()
    got = list(islice(webdataset_shards(str(tmp_path / "shard-0.tar"), 64, bad)(0), 5))
    texts = [s.segments[0].text for s in got]
    # b and c are bad: their slots hold d, the next good pair; then it wraps to the start.
    assert texts == ["a red circle"] + ["a green triangle"] * 3 + ["a red circle"]
    assert np.array_equal(got[1].segments[1].pixels, images[3])
    assert bad == {"unreadable image": 1, "too small": 1}


def test_missing_and_truncated_shards_are_counted_not_fatal(tmp_path):
    with wds.TarWriter(str(tmp_path / "good.tar")) as w:
        for k in range(3):
            w.write({"__key__": f"k{k}", "png": png(np.full((64, 64, 3), k, np.uint8)),
                     "txt": f"caption {k}"})  # fmt: skip
    data = (tmp_path / "good.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:1000])  # inside the first image
    urls = [str(tmp_path / n) for n in ("good.tar", "cut.tar", "missing.tar")]
    bad = BadSamples()
    got = list(islice(webdataset_shards(urls, 64, bad)(0), 8))
    assert {s.segments[0].text for s in got} == {f"caption {k}" for k in range(3)}
    # The cut shard and the missing one, each reported when the shards are first counted (the
    # cut shard's last pair may also arrive without its caption: a "missing text" sample).
    assert bad["unreadable shard"] >= 2 and set(bad) <= {"unreadable shard", "missing text"}
    assert "unreadable shard" in bad.report()


def test_mixture_is_a_pure_function_of_the_index(folder):
    cfg = get_run_config("tiny", [f"train.data=world:0.5,folder={folder}:0.5"])
    assert cfg.train.data == {"world": 0.5, f"folder={folder}": 0.5}  # CLI syntax parses
    src = build_source(cfg.train.data, seed=3, resolution=64, bad=BadSamples())
    whole = list(islice(src(0), 8))
    assert {s.meta["source"] for s in whole} == {"world", f"folder={folder}"}
    tail = list(islice(src(5), 3))
    assert all(same(a, b) for a, b in zip(whole[5:], tail, strict=True))
    with pytest.raises(ValueError, match="unknown data source"):
        build_source({"s3=/x": 1.0}, seed=0, resolution=64, bad=BadSamples())
    with pytest.raises(ValueError, match="positive weight"):
        mixture({}, 0)


def test_file_sources_are_read_in_a_fresh_seeded_order_each_epoch(folder):
    from unimm.data.config import DataConfig
    from unimm.data.readers import export_records

    def stream(seed: int, shuffle: bool = True, n: int = 18) -> list:
        src = build_source({f"unimm={folder}": 1.0}, seed, 64, BadSamples(),
                           data=DataConfig(shuffle=shuffle))  # fmt: skip
        return list(islice(src(0), n))

    world = list(islice(world_samples("train", 0), 6))
    good = [world[i] for i in (0, 2, 5)]  # lines 1, 3 and 4 of the folder are bad

    def which(sample) -> int:
        (k,) = [k for k, g in enumerate(good) if same(sample, g)]
        return k

    plain = jsonl_folder(folder, 64, BadSamples())
    assert all(same(a, b) for a, b in zip(stream(0, shuffle=False), islice(plain(0), 18)))
    orders = [[which(s) for s in stream(seed)] for seed in (0, 1)]
    for order in orders:
        epochs = [order[i : i + 6] for i in range(0, 18, 6)]
        assert all(set(e) <= {0, 1, 2} for e in epochs)
        assert len({tuple(e) for e in epochs}) > 1  # each epoch its own order
    assert orders[0] != orders[1]  # and each seed
    assert orders[0] == [which(s) for s in stream(0)]  # reproducible
    src = build_source({f"unimm={folder}": 1.0}, 3, 64, BadSamples())
    streams_agree(src, 14)  # resume and rank slicing stay exact, epochs included
    # a shuffled record's label still names its line of the file
    base = export_records(folder, 64)
    shuffled = base.shuffled(5)
    lines = (folder / "samples.jsonl").read_bytes().splitlines(keepends=True)
    for i, raw in islice(shuffled.read(0), 12):
        j, record = raw
        assert record == lines[j] and shuffled.label(i, raw) == base.label(j, record)
