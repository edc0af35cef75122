"""Validated recipes: schema, YAML in/out, dotted overrides."""

from tricklab.recipe.io import (
    apply_overrides,
    load_recipe,
    parse_overrides,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from tricklab.recipe.schema import Recipe

__all__ = ["Recipe", "apply_overrides", "load_recipe", "parse_overrides", "recipe_from_dict", "recipe_to_dict",
           "save_recipe"]
