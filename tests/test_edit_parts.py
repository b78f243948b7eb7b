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
