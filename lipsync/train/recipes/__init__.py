"""Training recipes: each provides models, data and a training step for the one `Trainer`."""
from __future__ import annotations

from lipsync.train.recipes.generator import GeneratorRecipe, GeneratorRecipeConfig
from lipsync.train.recipes.marlin_pretrain import MarlinPretrainConfig, MarlinPretrainRecipe
from lipsync.train.recipes.syncnet import SyncNetRecipe, SyncNetRecipeConfig

RECIPES = {
    "syncnet": (SyncNetRecipe, SyncNetRecipeConfig),
    "generator": (GeneratorRecipe, GeneratorRecipeConfig),
    "marlin": (MarlinPretrainRecipe, MarlinPretrainConfig),
}

__all__ = ["RECIPES", "GeneratorRecipe", "GeneratorRecipeConfig", "MarlinPretrainConfig", "MarlinPretrainRecipe",
           "SyncNetRecipe", "SyncNetRecipeConfig"]
