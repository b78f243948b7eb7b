"""Task streams: determinism, split disjointness, held-out pairs kept out of training, export."""

import json
from itertools import islice

import numpy as np
import pytest

from unimm.data.sample import Image, Text
from unimm.world.detector import detect
from unimm.world.export import export_world
from unimm.world.language import caption_matches
from unimm.world.palette import HELDOUT_PAIRS
from unimm.world.render import render
from unimm.world.scene import scenes_match
from unimm.world.tasks import TASKS, world_samples

HELDOUT_TEXT = [f"{c} {s}" for c, s in HELDOUT_PAIRS]


def test_stream_is_deterministic_and_resumable():
    a = list(islice(world_samples("train", 7), 20))
    b = list(islice(world_samples("train", 7), 20))
    c = list(islice(world_samples("train", 7, start=10), 10))
    assert [s.meta["scene"] for s in a] == [s.meta["scene"] for s in b]
    assert [s.meta["scene"] for s in a[10:]] == [s.meta["scene"] for s in c]
    ev = list(islice(world_samples("eval", 7), 20))
    assert all(x.meta["scene"] != y.meta["scene"] for x, y in zip(a, ev, strict=True))


def test_heldout_pairs_never_in_train():
    n_seen = 0
    for s in islice(world_samples("train", 0), 3000):
        for key in ("scene", "target_scene"):
            if key in s.meta:
                assert not s.meta[key].has_heldout()
        for seg in s.segments:
            if isinstance(seg, Text):
                assert not any(h in seg.text for h in HELDOUT_TEXT), seg.text
        n_seen += 1
    assert n_seen == 3000
    with pytest.raises(ValueError, match="held-out"):
        next(world_samples("train", 0, heldout="only"))


def test_sample_layouts():
    seen = set()
    for s in islice(world_samples("eval", 1, tasks={t: 1.0 for t in TASKS}), 200):
        seen.add(s.task)
        kinds = ["T" if isinstance(x, Text) else "I" for x in s.segments]
        want = {
            "t2i": ("TI", (1,)),
            "caption": ("IT", (1,)),
            "vqa": ("ITT", (2,)),
            "edit": ("ITI", (2,)),
            "interleaved": ("TITITT", (1, 3, 5)),
            "reason": ("TT", (1,)),
        }
        assert ("".join(kinds), s.targets) == want[s.task]
        if s.task == "reason":
            continue
        img = s.segments[1 if s.task in ("t2i", "interleaved") else 0]
        assert isinstance(img, Image) and np.array_equal(img.pixels, render(s.meta["scene"]))
        if s.task == "caption":
            assert caption_matches(s.segments[1].text, s.meta["scene"])
        if s.task in ("edit", "interleaved"):
            out = s.segments[-1 if s.task == "edit" else 3].pixels
            assert scenes_match(detect(out), s.meta["target_scene"], pos_tol=0)
    assert seen == set(TASKS)


def test_heldout_eval_stream_asks_about_heldout_pairs():
    vqa = list(islice(world_samples("eval", 0, {"vqa": 1.0}, heldout="only"), 100))
    assert all(s.meta["scene"].has_heldout() for s in vqa)
    mention = sum(any(h in s.segments[1].text for h in HELDOUT_TEXT) for s in vqa)
    assert mention > 30


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        next(world_samples("test", 0))
    with pytest.raises(ValueError, match="unknown task"):
        next(world_samples("train", 0, tasks={"dance": 1.0}))


def test_export_world(tmp_path):
    out = export_world(tmp_path / "w", 12, "train", 3, progress=False)
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and not list(tmp_path.glob(".w.*"))
    for r in rows:
        for seg in r["segments"]:
            assert "text" in seg or (out / seg["image"]).is_file()
    with pytest.raises(ValueError, match="exists"):
        export_world(tmp_path / "w", 2, "train", 3, progress=False)


def test_several_questions_per_vqa_image():
    from unimm.world.qa import answer_question

    one = list(islice(world_samples("train", 3, {"vqa": 1.0}), 50))
    many = list(islice(world_samples("train", 3, {"vqa": 1.0}, vqa_questions=3), 300))
    lengths = set()
    for s in many:
        turns = s.segments[1:]
        assert isinstance(s.segments[0], Image) and len(turns) % 2 == 0
        assert s.targets == tuple(range(2, len(s.segments), 2))  # every answer, no question
        lengths.add(len(turns) // 2)
        qtypes = s.meta["qtypes"]
        assert len(set(qtypes)) == len(qtypes)  # one question per type
        for q, a in zip(turns[::2], turns[1::2], strict=True):
            assert answer_question(q.text, s.meta["scene"]) == a.text
            assert not any(h in q.text or h in a.text for h in HELDOUT_TEXT)
    assert max(lengths) == 3 and min(lengths) >= 1
    # the default stream is the one-question stream, draw for draw
    default = list(islice(world_samples("train", 3, {"vqa": 1.0}, vqa_questions=1), 50))
    assert [s.segments[1].text for s in one] == [s.segments[1].text for s in default]


def test_object_curriculum_grows_the_scenes_then_leaves_the_stream_alone():
    from unimm.world.tasks import ramp_max_objects

    assert [ramp_max_objects(i, 8, 1, 4) for i in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 4, 4]
    assert ramp_max_objects(5, 0, 1, 4) == 4  # no ramp
    ramp = 400
    ramped = list(islice(world_samples("train", 5, {"t2i": 1.0}, object_ramp=ramp), 600))
    plain = list(islice(world_samples("train", 5, {"t2i": 1.0}), 600))
    counts = [len(s.meta["scene"].objects) for s in ramped]
    assert max(counts[:100]) == 1 and max(counts[100:200]) == 2 and max(counts[200:300]) == 3
    assert max(counts[300:]) == 4
    # after the ramp the stream is the plain one, sample for sample
    assert [s.segments[0].text for s in ramped[ramp:]] == [s.segments[0].text for s in plain[ramp:]]
    # resuming mid-ramp draws the same samples
    resumed = list(islice(world_samples("train", 5, {"t2i": 1.0}, start=150, object_ramp=ramp), 5))
    assert [s.segments[0].text for s in resumed] == [s.segments[0].text for s in ramped[150:155]]
    with pytest.raises(ValueError, match="object_ramp"):
        next(world_samples("train", 5, object_ramp=-1))


def test_easy_yes_no_questions_need_one_image_feature_and_stay_balanced():
    import random

    from unimm.world.qa import answer_question, questions
    from unimm.world.scene import sample_scene

    def asked(easy: bool) -> tuple[list, list]:
        rng = random.Random(0)
        exists, position = [], []
        for _ in range(600):
            scene = sample_scene(rng, 64, 1, 4, "exclude")
            for qa in questions(scene, rng, easy_yes_no=easy):
                assert answer_question(qa.question, scene) == qa.answer
                if qa.qtype == "exists":
                    exists.append((qa, scene))
                elif qa.qtype == "position":
                    position.append((qa, scene))
        return exists, position

    def gap(qa, scene) -> float:  # how far apart the two asked objects lie along the relation
        (a,) = [o for o in scene.objects if o.pair == qa.pairs[0]]
        (b,) = [o for o in scene.objects if o.pair == qa.pairs[1]]
        horizontal = " left of " in qa.question or " right of " in qa.question
        return abs(a.x - b.x) if horizontal else abs(a.y - b.y)

    for easy in (False, True):
        exists, position = asked(easy)
        no = [(qa, scene) for qa, scene in exists if qa.answer == "no"]
        lacks_colour = [qa.pairs[0][0] not in {o.color for o in s.objects} for qa, s in no]
        lacks_both = [
            qa.pairs[0][0] not in {o.color for o in s.objects}
            and qa.pairs[0][1] not in {o.shape for o in s.objects}
            for qa, s in no
        ]
        wide = [gap(qa, s) >= 64 / 3 for qa, s in position]
        for qas in (exists, position):  # half yes, half no either way
            assert 0.4 < sum(qa.answer == "yes" for qa, _ in qas) / len(qas) < 0.6
        if easy:  # a scene of at most 4 objects leaves two colours out: always an easy "no"
            assert all(lacks_colour) and sum(lacks_both) / len(lacks_both) > 0.8
            assert sum(wide) / len(wide) > 0.8
        else:  # the balanced questions: most "no"s name a colour or shape the scene has
            assert sum(lacks_both) / len(lacks_both) < 0.6
            assert sum(wide) / len(wide) < 0.6


def test_yes_no_curriculum_eases_the_first_samples_then_leaves_the_stream_alone():
    from unimm.world.tasks import easy_share

    assert [easy_share(i, 4) for i in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]
    assert easy_share(3, 0) == 0.0
    ramp = 200
    kw = {"vqa_questions": 5}
    ramped = list(islice(world_samples("train", 6, {"vqa": 1.0}, yes_no_ramp=ramp, **kw), 300))
    plain = list(islice(world_samples("train", 6, {"vqa": 1.0}, **kw), 300))

    def easy_nos(samples) -> float:  # share of "no" exists answers whose colour is absent
        hits = []
        for s in samples:
            turns = s.segments[1:]
            for q, a in zip(turns[::2], turns[1::2], strict=True):
                if q.text.startswith("is there ") and a.text == "no":
                    colour = q.text.split()[3]
                    hits.append(colour not in {o.color for o in s.meta["scene"].objects})
        return sum(hits) / len(hits)

    assert easy_nos(ramped[:50]) > 0.85 > easy_nos(plain[:50])
    text = [[t.text for t in s.segments[1:]] for s in ramped[ramp:]]
    assert text == [[t.text for t in s.segments[1:]] for s in plain[ramp:]]
    resumed = list(
        islice(world_samples("train", 6, {"vqa": 1.0}, start=20, yes_no_ramp=ramp, **kw), 3)
    )
    assert [s.segments[1].text for s in resumed] == [s.segments[1].text for s in ramped[20:23]]
    with pytest.raises(ValueError, match="yes_no_ramp"):
        next(world_samples("train", 5, yes_no_ramp=-1))


def test_yes_no_twins_ask_the_other_answer_about_the_same_image():
    from unimm.world.qa import answer_question

    samples = list(islice(world_samples("train", 4, {"vqa": 1.0}, vqa_questions=3,
                                        yes_no_twins=True), 300))  # fmt: skip
    twins = 0
    for s in samples:
        turns = s.segments[1:]
        assert s.targets == tuple(range(2, len(s.segments), 2))
        qa = [(q.text, a.text) for q, a in zip(turns[::2], turns[1::2], strict=True)]
        for q, a in qa:
            assert answer_question(q, s.meta["scene"]) == a
            assert not any(h in q or h in a for h in HELDOUT_TEXT)
        qtypes = s.meta["qtypes"]
        for i, t in enumerate(qtypes):
            if t in ("exists", "position") and (i == 0 or qtypes[i - 1] != t):
                # a yes/no question is followed by its twin (unless every pair is present)
                if i + 1 < len(qtypes) and qtypes[i + 1] == t:
                    assert {qa[i][1], qa[i + 1][1]} == {"yes", "no"}
                    twins += 1
    assert twins > 100
    one = next(world_samples("train", 4, {"vqa": 1.0}, yes_no_twins=True))
    assert len(one.segments) in (3, 5)  # one question, and its twin when it is a yes/no one


def test_where_questions_name_the_region_of_a_unique_pair():
    from unimm.world.qa import REGIONS, region
    from unimm.world.scene import Obj

    assert region(Obj("circle", "red", 5, 60, 8), 64) == "bottom left"
    assert region(Obj("circle", "red", 32, 32, 8), 64) == "center"
    assert region(Obj("circle", "red", 63, 0, 8), 64) == "top right"
    samples = list(islice(world_samples("train", 6, {"vqa": 1.0}, vqa_questions=3, where=True),
                          300))  # fmt: skip
    answers = set()
    for s in samples:
        turns = s.segments[1:]
        qa = [(q.text, a.text) for q, a in zip(turns[::2], turns[1::2], strict=True)]
        where = [(q, a) for q, a in qa if q.startswith("where is the ")]
        assert len(where) <= 1 and s.meta["qtypes"].count("where") == len(where)
        for q, a in where:
            c, shape = q.removeprefix("where is the ").rstrip("?").split()
            found = [o for o in s.meta["scene"].objects if o.pair == (c, shape)]
            assert a == (region(found[0], 64) if found else "nowhere")
            assert len(found) <= 1 and not any(h in q for h in HELDOUT_TEXT)
            answers.add(a)
    assert "nowhere" in answers and len(answers - {"nowhere"}) >= 6
    assert answers <= {r for row in REGIONS for r in row} | {"nowhere"}


def test_reasoned_answers_describe_the_scene_then_answer():
    from unimm.evaluate.common import normalise_answer
    from unimm.world.qa import ANSWER_MARK, answer_question, region

    kinds = ("exists", "count", "position")
    stream = world_samples("train", 8, {"vqa": 0.7, "interleaved": 0.3}, vqa_questions=3,
                           rationale=kinds)  # fmt: skip
    plain = world_samples("train", 8, {"vqa": 0.7, "interleaved": 0.3}, vqa_questions=3)
    reasoned = 0
    for s, p in islice(zip(stream, plain, strict=True), 300):
        # the same scenes and questions as without reasons: only the answers' text differs
        assert [type(x) for x in s.segments] == [type(x) for x in p.segments]
        assert s.meta.get("qtypes") == p.meta.get("qtypes")
        scene = s.meta["target_scene"] if s.task == "interleaved" else s.meta["scene"]
        for i in s.targets:
            seg, ref = s.segments[i], p.segments[i]
            if not isinstance(seg, Text):
                continue
            question = s.segments[i - 1].text
            if ANSWER_MARK not in seg.text:
                assert seg.text == ref.text
                assert question.startswith("what ")
                continue
            description, _, answer = seg.text.rpartition(f". {ANSWER_MARK} ")
            assert answer == ref.text == answer_question(question, scene)
            assert normalise_answer(seg.text) == ref.text
            if question.startswith("is the "):  # position: each object and its region
                placed = sorted(f"{o.color} {o.shape} at the {region(o, 64)}"
                                for o in scene.objects)  # fmt: skip
                named = description.replace(" and ", ", ").split(", ")
                assert sorted(n.split(" ", 1)[1] for n in named) == placed
            else:
                assert caption_matches(description, scene), seg.text
            reasoned += 1
    assert reasoned > 250


def test_reasons_only_where_a_description_settles_the_answer():
    from unimm.config import ConfigError, apply_overrides
    from unimm.evaluate.common import normalise_answer
    from unimm.train.config import TrainConfig
    from unimm.world.qa import QA, with_rationale

    with pytest.raises(ValueError, match="does not settle where"):
        with_rationale(QA("where is the red circle?", "top", "where"), "x")
    assert apply_overrides(TrainConfig(), ["vqa_rationale=exists"]).vqa_rationale == ("exists",)
    with pytest.raises(ConfigError, match="takes question types among"):
        apply_overrides(TrainConfig(), ["vqa_rationale=exists,where"])
    # evaluation scores a reasoned answer by the text after its last mark
    assert normalise_answer("A red circle. Answer: Yes.") == "yes"
    assert normalise_answer("answer: two. answer: three") == "three"
    assert normalise_answer(" Two. ") == "two"


def test_reason_samples_are_text_only_reasoned_answers():
    from unimm.world.qa import ANSWER_MARK, answer_question

    kinds = set()
    for s in islice(world_samples("train", 9, {"reason": 1.0}), 200):
        question, answer = (seg.text for seg in s.segments)
        assert s.task == "reason" and s.targets == (1,)
        assert all(isinstance(seg, Text) for seg in s.segments)
        assert answer.rpartition(f" {ANSWER_MARK} ")[2] == answer_question(
            question, s.meta["scene"]
        )
        assert not any(h in question or h in answer for h in HELDOUT_TEXT)
        kinds.add(s.meta["qtype"])
    assert kinds == {"count", "exists", "position"}
