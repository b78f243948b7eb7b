"""Recipe names -> model classes, and loading any checkpoint by the recipe it names."""

from __future__ import annotations

from pathlib import Path

from unimm.recipes.bagel import BagelModel
from unimm.recipes.base import UnifiedModel
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.ddit import DDiTModel
from unimm.recipes.diffusion_head import DiffusionHeadModel
from unimm.recipes.janus import JanusModel
from unimm.recipes.janusflow import JanusFlowModel
from unimm.recipes.metaquery import MetaQueryModel
from unimm.recipes.mmada import MMaDAModel
from unimm.recipes.parts import Parts, read_run_config
from unimm.recipes.showo import ShowoModel
from unimm.recipes.transfusion import TransfusionModel

RECIPES: dict[str, type[UnifiedModel]] = {
    ChameleonModel.recipe: ChameleonModel,
    ShowoModel.recipe: ShowoModel,
    MMaDAModel.recipe: MMaDAModel,
    TransfusionModel.recipe: TransfusionModel,
    DiffusionHeadModel.recipe: DiffusionHeadModel,
    JanusFlowModel.recipe: JanusFlowModel,
    JanusModel.recipe: JanusModel,
    MetaQueryModel.recipe: MetaQueryModel,
    BagelModel.recipe: BagelModel,
    DDiTModel.recipe: DDiTModel,
}


def recipe_class(name: str) -> type[UnifiedModel]:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (available: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def build_model(parts: Parts) -> UnifiedModel:
    return recipe_class(parts.config.recipe)(parts)


def load_model(directory: str | Path) -> UnifiedModel:
    """Load a checkpoint directory written by any recipe's save_pretrained."""
    from unimm.interop.hf_files import is_hf_folder

    if is_hf_folder(directory):
        raise ValueError(
            f"{directory} is a Hugging Face model folder, not a unimm checkpoint: convert it "
            "with `unimm import SRC_DIR DEST_DIR --kind ...` (docs/INTEROP.md)"
        )
    recipe, _ = read_run_config(directory)
    return recipe_class(recipe).from_pretrained(directory)
