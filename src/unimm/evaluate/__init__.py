"""Model-agnostic benchmarks on the scene world: GenEval-scene, VQA-, Caption-, Edit-scene.

Every harness takes plain callables over uint8 images and strings, so any recipe (or a
baseline, or an oracle) can be scored the same way.
"""

from unimm.evaluate.editing import edit_scene
from unimm.evaluate.geneval import geneval_scene
from unimm.evaluate.report import image_grid, plot_loss_curve, write_report
from unimm.evaluate.understanding import caption_scene, vqa_scene

__all__ = [
    "caption_scene",
    "edit_scene",
    "geneval_scene",
    "image_grid",
    "plot_loss_curve",
    "vqa_scene",
    "write_report",
]
