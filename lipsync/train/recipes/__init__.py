"""Training recipes: each provides models, data and a training step for the one `Trainer`."""
from __future__ import annotations

from lipsync.train.recipes.syncnet import SyncNetRecipe, SyncNetRecipeConfig

RECIPES = {"syncnet": (SyncNetRecipe, SyncNetRecipeConfig)}

__all__ = ["RECIPES", "SyncNetRecipe", "SyncNetRecipeConfig"]
