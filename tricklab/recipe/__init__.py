"""Validated recipes: schema, YAML in/out, dotted overrides.

The public names are read lazily (``tricklab.lazy``): ``tricklab.recipe.identity`` alone does not load pydantic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tricklab.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_exports(__name__, {
    "Recipe": "tricklab.recipe.schema:Recipe",
    **{name: f"tricklab.recipe.io:{name}" for name in __all__ if name != "Recipe"},
})
