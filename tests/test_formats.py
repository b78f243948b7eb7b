"""Every data format round-trips through the readers; bad files are counted by reason; a
folder's format is detected, or the error names what was looked for."""

from __future__ import annotations

import json
from itertools import islice

import numpy as np
import pytest

from tests.data_formats import (
    caption_records,
    write_every_format,
    write_imagefolder,
    write_llava,
    write_wds,
)
from tests.image_files import BAD_KINDS, png
from tests.test_readers import streams_agree
from unimm.data.config import DataConfig
from unimm.data.readers import BadSamples, build_source, open_records
from unimm.data.records import within
from unimm.data.sample import Image, Text

# File order: these tests follow each record through its reader (training reads a fresh
# seeded order each epoch, data.shuffle; tests/test_readers.py checks that).
IN_ORDER = DataConfig(shuffle=False)
CAPTIONS = ["a red kite", 'a "quoted", comma caption', "two\nlines", "café au lait", "fin"]


def pairs_of(n: int = 5, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
    return list(zip(images, CAPTIONS[:n]))


def as_pair(sample) -> tuple[np.ndarray, str]:
    (image,) = [s.pixels for s in sample.segments if isinstance(s, Image)]
    (text,) = [s.text for s in sample.segments if isinstance(s, Text)]
    return image, text


def test_every_format_round_trips(tmp_path):
    pairs = pairs_of()
    for entry, what in write_every_format(tmp_path, pairs).items():
        bad = BadSamples()
        got = list(islice(build_source({entry: 1.0}, 0, 32, bad, data=IN_ORDER)(0), 2 * len(pairs)))
        for k, sample in enumerate(got):  # two epochs, in order
            image, text = as_pair(sample)
            assert np.array_equal(image, pairs[k % len(pairs)][0]), (what, k)
            assert text == pairs[k % len(pairs)][1].strip(), (what, k)
        assert not bad, (what, bad)


def test_formats_are_detected_and_named(tmp_path):
    kinds = {
        entry: open_records(entry, 32, BadSamples()).kind
        for entry in write_every_format(tmp_path, pairs_of(2))
    }
    assert sorted(kinds.values()) == sorted([
        "imagefolder (metadata.jsonl, text column 'text')",
        "imagefolder (metadata.csv, text column 'caption')",
        "LLaVA conversations (data.json)",
        "LLaVA conversations (c.jsonl)",
        "WebDataset shards",
        "WebDataset shards",
        "unimm export (samples.jsonl)",
    ])  # fmt: skip
    bare = str(tmp_path / "hf_csv")  # a path alone is `folder=PATH`
    assert build_source({bare: 1.0}, 0, 32, BadSamples())(0) is not None


def test_an_unknown_folder_names_what_was_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="samples.jsonl .* metadata.jsonl or metadata.csv .*LLaVA"):
        build_source({f"folder={tmp_path / 'empty'}": 1.0}, 0, 32, BadSamples())
    with pytest.raises(ValueError, match="no such file or folder"):
        build_source({f"folder={tmp_path / 'nope'}": 1.0}, 0, 32, BadSamples())
    with pytest.raises(ValueError, match="unknown data source"):
        build_source({"nope/nothing": 1.0}, 0, 32, BadSamples())
    records, images = caption_records(pairs_of(1))
    write_llava(tmp_path / "two" / "a.json", records, images)
    write_llava(tmp_path / "two" / "b.json", records, images)
    with pytest.raises(ValueError, match="several LLaVA files"):
        build_source({f"folder={tmp_path / 'two'}": 1.0}, 0, 32, BadSamples())


def test_text_column_is_chosen_by_key(tmp_path):
    folder = write_imagefolder(tmp_path / "f", pairs_of(2), "csv", column="label")
    with pytest.raises(ValueError, match=r"looked for 'text', 'caption'.*columns: file_name, id"):
        open_records(f"imagefolder={folder}", 32, BadSamples())
    src = build_source({f"folder={folder}": 1.0}, 0, 32, BadSamples(), data=_cfg("label"))
    assert as_pair(next(src(1)))[1] == CAPTIONS[1]
    with pytest.raises(ValueError, match="no column data.text_column='title'"):
        open_records(f"folder={folder}", 32, BadSamples(), _cfg("title"))


def _cfg(column: str) -> DataConfig:
    return DataConfig(text_column=column)


def test_imagefolder_question_answer_rows_are_vqa(tmp_path):
    folder = tmp_path / "vqa"
    write_imagefolder(folder, pairs_of(1), "jsonl")
    rows = [{"file_name": "images/0000.png", "question": "what is it?", "answer": "a kite"}]
    (folder / "metadata.jsonl").write_text(json.dumps(rows[0]) + "\n")
    sample = next(build_source({f"folder={folder}": 1.0}, 0, 32, BadSamples())(0))
    assert sample.task == "vqa" and sample.targets == (2,)
    assert [s.text for s in sample.segments[1:]] == ["what is it?", "a kite"]


def test_pairs_train_captioning_too_when_train_tasks_weigh_it(tmp_path):
    entry = f"wds={write_wds(tmp_path / 's.tar', pairs_of())}"
    tasks = {"t2i": 0.5, "caption": 0.5, "vqa": 0.3}
    got = list(islice(build_source({entry: 1.0}, 0, 32, BadSamples(), tasks)(0), 20))
    assert {s.task for s in got} == {"t2i", "caption"}
    for s in got:  # the world's layouts: caption first for t2i, image first for captioning
        first = Image if s.task == "caption" else Text
        assert isinstance(s.segments[0], first) and s.targets == (1,)
    only_t2i = build_source({entry: 1.0}, 0, 32, BadSamples(), {"t2i": 1.0, "vqa": 1.0})
    assert {s.task for s in islice(only_t2i(0), 20)} == {"t2i"}


def test_llava_conversations(tmp_path):
    rng = np.random.default_rng(3)
    a, b = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    records = [
        {"id": "vqa", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "A"}]},
        {"id": "chat", "image": ["a.png", "b.png"], "conversations": [
            {"from": "human", "value": "Compare <image> with <image> please"},
            {"from": "gpt", "value": "They differ."},
            {"role": "user", "content": "Which is brighter?"},
            {"role": "assistant", "content": "The first."}]},
        {"id": "no placeholder", "image": "b.png", "conversations": [
            {"from": "human", "value": "Describe it."}, {"from": "gpt", "value": "Noise."}]},
        {"id": "text only", "conversations": [
            {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]  # fmt: skip
    path = write_llava(tmp_path / "d" / "chat.json", records, {"a.png": a, "b.png": b})
    got = list(
        islice(build_source({f"llava={path}": 1.0}, 0, 32, BadSamples(), data=IN_ORDER)(0), 4)
    )
    vqa, chat, first, text = got
    assert vqa.task == "vqa" and vqa.targets == (2,)
    assert np.array_equal(vqa.segments[0].pixels, a)
    kinds = [
        type(s).__name__ + (f":{s.role}" if isinstance(s, Text) else "") for s in chat.segments
    ]
    assert kinds == ["Text:user", "Image", "Text:user", "Image", "Text:user", "Text:assistant",
                     "Text:user", "Text:assistant"]  # fmt: skip
    assert chat.targets == (5, 7) and chat.task == "conversation"
    assert np.array_equal(chat.segments[3].pixels, b)
    assert isinstance(first.segments[0], Image) and first.targets == (2,)  # image goes first
    assert text.segments[0].text == "Hi" and text.targets == (1,)


def test_bad_llava_records_are_counted(tmp_path):
    ok = {"from": "gpt", "value": "fine"}
    records = [
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image> <image>"}, ok]},
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>"}]},
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>"},
                                             {"from": "gpt", "value": " "}]},
        {"image": "missing.png", "conversations": [{"from": "human", "value": "<image>"}, ok]},
        {"image": "a.png", "conversations": [{"from": "robot", "value": "beep"}, ok]},
        {"image": "a.png", "conversations": "not a list"},
        {"image": "a.png", "conversations": [{"from": "human", "value": "<image>"}, ok]},
    ]  # fmt: skip
    a = np.zeros((32, 32, 3), np.uint8)
    path = write_llava(tmp_path / "l" / "x.jsonl", records, {"a.png": a}, jsonl=True)
    with path.open("a") as f:
        f.write("{broken\n")
    bad = BadSamples()
    got = list(islice(build_source({f"folder={path}": 1.0}, 0, 32, bad, data=IN_ORDER)(0), 7))
    assert [s.meta["index"] for s in got] == [6] * 7
    assert bad == {"malformed record": 3, "missing text": 2, "image not found": 1}


def test_every_bad_image_kind_is_counted_by_every_image_reader(tmp_path):
    cfg = DataConfig(max_pixels=100_000, shuffle=False)
    good = np.zeros((32, 32, 3), np.uint8)
    files = {"good.png": png(good)} | {name: data for name, (data, _) in BAD_KINDS.items()}
    expected = BadSamples(reason for _, reason in BAD_KINDS.values())
    folder = tmp_path / "hf"
    folder.mkdir()
    rows = []
    for name, data in files.items():
        (folder / name).write_bytes(data)
        rows.append({"file_name": name, "text": f"caption of {name}"})
    rows += [{"file_name": "missing.png", "text": "x"}, {"file_name": "good.png", "text": ""}]
    lines = [json.dumps(r) for r in rows] + ["{broken", "[1, 2]"]
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    bad = BadSamples()
    # sample 0 is the good row; sample 1 reads every bad row on to the good one of epoch 2
    got = list(islice(build_source({f"folder={folder}": 1.0}, 0, 32, bad, data=cfg)(0), 2))
    assert all(as_pair(s)[1] == "caption of good.png" for s in got)
    more = {"image not found": 1, "missing text": 1, "JSON": 1, "malformed record": 1}
    assert bad == expected + BadSamples(more)

    import webdataset as wds

    with wds.TarWriter(str(tmp_path / "bad.tar")) as w:
        for k, (name, data) in enumerate(files.items()):
            w.write({"__key__": f"{k:04d}", "png": data, "txt": name})
    bad = BadSamples()
    list(islice(build_source({f"wds={tmp_path / 'bad.tar'}": 1.0}, 0, 32, bad, data=cfg)(0), 2))
    assert bad == expected


def test_new_formats_are_pure_functions_of_the_index_with_bad_rows(tmp_path):
    pairs = pairs_of()
    folder = write_imagefolder(tmp_path / "hf", pairs, "csv")
    (folder / "images" / "0001.png").write_bytes(b"broken")
    with (folder / "metadata.csv").open("a") as f:
        f.write('images/0003.png,"a caption\nwith a newline",9\n')
        f.write("images/0004.png,too,many,fields\n")
    streams_agree(build_source({f"folder={folder}": 1.0}, 0, 32, BadSamples()), 16)
    records, images = caption_records(pairs)
    records[2]["conversations"] = []
    path = write_llava(tmp_path / "l" / "x.json", records, images)
    streams_agree(build_source({f"llava={path}": 1.0}, 0, 32, BadSamples()), 12)


def test_samples_too_long_for_the_model_are_skipped_purely(tmp_path):
    entry = f"wds={write_wds(tmp_path / 's.tar', pairs_of())}"
    bad = BadSamples()
    src = within(build_source({entry: 1.0}, 0, 32, bad), lambda s: len(as_pair(s)[1]), 9, bad)
    streams_agree(src, 12)  # captions over 9 characters are dropped: slots filled by the next
    assert {as_pair(s)[1] for s in islice(src(0), 10)} == {"two\nlines", "fin"}
    assert set(bad) == {"too long for model.max_seq_len"}
