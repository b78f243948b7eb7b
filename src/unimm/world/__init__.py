"""The scene world of shared/WORLD.md: scenes, rendering, language, detector, tasks, GenEval."""

from unimm.world.detector import detect
from unimm.world.edits import Edit, edit
from unimm.world.geneval import GenEvalPrompt, check, geneval_prompts
from unimm.world.language import canonical_caption, caption, parse_caption
from unimm.world.palette import BACKGROUND, COLORS, HELDOUT_PAIRS, NUMBER_WORDS, SHAPES
from unimm.world.qa import QA, questions
from unimm.world.render import render
from unimm.world.scene import Obj, Scene, place_objects, relation, sample_scene
from unimm.world.tasks import world_samples

__all__ = [
    "BACKGROUND",
    "COLORS",
    "HELDOUT_PAIRS",
    "NUMBER_WORDS",
    "QA",
    "SHAPES",
    "Edit",
    "GenEvalPrompt",
    "Obj",
    "Scene",
    "canonical_caption",
    "caption",
    "check",
    "detect",
    "edit",
    "geneval_prompts",
    "parse_caption",
    "place_objects",
    "questions",
    "relation",
    "render",
    "sample_scene",
    "world_samples",
]
