"""Training recipes: each provides models, data and a training step for the one `Trainer`."""
from __future__ import annotations

from lipsync.train.recipes.generator import GeneratorRecipe, GeneratorRecipeConfig
from lipsync.train.recipes.syncnet import SyncNetRecipe, SyncNetRecipeConfig

RECIPES = {
    "syncnet": (SyncNetRecipe, SyncNetRecipeConfig),
    "generator": (GeneratorRecipe, GeneratorRecipeConfig),
}

__all__ = ["RECIPES", "GeneratorRecipe", "GeneratorRecipeConfig", "SyncNetRecipe", "SyncNetRecipeConfig"]
