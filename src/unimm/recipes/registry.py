"""Recipe names -> model classes, and loading any checkpoint by the recipe it names."""

from __future__ import annotations

from pathlib import Path

from unimm.recipes.base import UnifiedModel
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.diffusion_head import DiffusionHeadModel
from unimm.recipes.janusflow import JanusFlowModel
from unimm.recipes.parts import Parts, read_run_config
from unimm.recipes.transfusion import TransfusionModel

RECIPES: dict[str, type[UnifiedModel]] = {
    ChameleonModel.recipe: ChameleonModel,
    TransfusionModel.recipe: TransfusionModel,
    DiffusionHeadModel.recipe: DiffusionHeadModel,
    JanusFlowModel.recipe: JanusFlowModel,
}


def recipe_class(name: str) -> type[UnifiedModel]:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r} (available: {', '.join(sorted(RECIPES))})")
    return RECIPES[name]


def build_model(parts: Parts) -> UnifiedModel:
    return recipe_class(parts.config.recipe)(parts)


def load_model(directory: str | Path) -> UnifiedModel:
    """Load a checkpoint directory written by any recipe's save_pretrained."""
    recipe, _ = read_run_config(directory)
    return recipe_class(recipe).from_pretrained(directory)
