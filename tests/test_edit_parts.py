"""Edit-scene's partial readings: instruction done, untouched objects preserved."""

from __future__ import annotations

from itertools import islice

from unimm.evaluate.editing import edit_correct, edit_parts
from unimm.world.scene import Scene
from unimm.world.tasks import world_samples


def edits(n: int = 300):
    return list(islice(world_samples("eval", 5, {"edit": 1.0}), n))


def test_the_target_itself_does_everything_and_keeps_everything():
    kinds = set()
    for s in edits():
        m = s.meta
        kinds.add(m["edit_kind"])
        args = (m["edit_kind"], m["edit_index"], m["scene"], m["target_scene"])
        assert edit_parts(*args, m["target_scene"]) == (True, 1.0)
        assert edit_correct(m["edit_kind"], m["scene"], m["target_scene"], m["target_scene"])
    assert kinds == {"add", "move", "recolor", "remove"}


def test_a_copy_of_the_source_keeps_everything_and_does_nothing():
    for s in edits():
        m = s.meta
        args = (m["edit_kind"], m["edit_index"], m["scene"], m["target_scene"])
        assert edit_parts(*args, m["scene"]) == (False, 1.0), m["edit_kind"]


def test_a_blank_output_keeps_nothing():
    for s in edits(100):
        m = s.meta
        args = (m["edit_kind"], m["edit_index"], m["scene"], m["target_scene"])
        done, kept = edit_parts(*args, Scene([], m["scene"].resolution))
        untouched = len(m["scene"].objects) - (m["edit_kind"] != "add")
        assert kept == (0.0 if untouched else 1.0)
        assert done == (m["edit_kind"] == "remove")  # only a removal is done by drawing nothing


def test_half_the_untouched_objects_is_half_preserved():
    for s in edits():
        m = s.meta
        if m["edit_kind"] != "add" or len(m["scene"].objects) != 2:
            continue
        kept_one = Scene(m["target_scene"].objects[1:], m["scene"].resolution)
        assert edit_parts("add", m["edit_index"], m["scene"], m["target_scene"], kept_one) == (
            True,
            0.5,
        )
        return
    raise AssertionError("no two-object add in the sample")


def oracle_editor(images, instructions):
    from unimm.world.detector import detect
    from unimm.world.edits import InstructionError, apply_instruction
    from unimm.world.render import render

    out = []
    for im, ins in zip(images, instructions, strict=True):
        try:
            out.append(render(apply_instruction(detect(im), ins).target))
        except InstructionError:  # after a failed step the instruction may not apply
            out.append(im)
    return out


def test_an_oracle_editor_completes_its_chains():
    from unimm.evaluate.edit_chain import edit_chains

    res = edit_chains(oracle_editor, n=20, progress=False)
    assert res["n"] >= 18 and len(res["per_step"]) == 3
    assert res["overall"] >= 0.9 and min(res["per_step"]) >= 0.9


def test_a_copying_editor_fails_every_step_and_a_late_failure_breaks_the_chain():
    from unimm.evaluate.edit_chain import edit_chains

    res = edit_chains(lambda ims, ins: list(ims), n=20, progress=False)
    # A later step can be a no-op on an unedited image (recolour the circle red when the first
    # step failed to make it blue), and a copy is right then; a whole chain never is.
    assert res["overall"] == 0.0 and res["per_step"][0] == 0.0 and max(res["per_step"]) <= 0.1
    calls = []

    def fails_at_step_two(images, instructions):
        calls.append(len(images))
        return list(images) if len(calls) == 2 else oracle_editor(images, instructions)

    res = edit_chains(fails_at_step_two, n=20, batch_size=32, progress=False)
    assert res["per_step"][0] >= 0.9 and res["per_step"][1] == 0.0 and res["overall"] == 0.0
