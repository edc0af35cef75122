"""Which recipes a population trains: every recipe key is on the allow-list or on the trained-alone list, and a
recipe that sets a key off the allow-list is trained alone (``tricklab.population.support``)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tricklab.population import support
from tricklab.population.support import (
    ALLOWED,
    PER_MEMBER,
    SHARED,
    TRAINED_ALONE,
    covers,
    population_key,
    population_unsupported,
)
from tricklab.recipe import Recipe, recipe_from_dict


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf field of a recipe section, recursively (``model_fields``), as dotted keys."""
    keys = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += schema_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


KEYS = schema_keys(Recipe)


def test_the_schema_walk_sees_every_section():
    assert {"seed", "optimizer.lr", "data.batch_size", "averaging.mode", "model.python"} <= set(KEYS)
    assert len(KEYS) > 40


@pytest.mark.parametrize("key", KEYS)
def test_every_recipe_key_is_either_honoured_or_trained_alone(key):
    """A key on neither list fails here: decide whether a population honours it (per member or shared, and then
    implement it in the engine) or trains such recipes alone."""
    honoured, alone = covers(ALLOWED, key), covers(TRAINED_ALONE, key)
    assert honoured != alone, f"{key}: {'on both lists' if honoured else 'on neither list'} of population.support"
    assert not (covers(PER_MEMBER, key) and covers(SHARED, key)), f"{key} is both per-member and shared"


def test_every_listed_key_exists_in_the_schema():
    """No stale names: each entry of the lists names a recipe key or a section of them."""
    for pattern in ALLOWED + TRAINED_ALONE + tuple(support.SHARED_VALUES):
        assert any(covers((pattern,), key) for key in KEYS), pattern


def _recipe(**sections):
    base = {"data": {"name": "synthetic", "size": 600, "batch_size": 32}, "model": {"name": "mlp"}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


@pytest.mark.parametrize("sections, key", [
    ({"model": {"python": "tests.conftest:tiny_model"}}, "model.python"),
    ({"averaging": {"mode": "ema"}}, "averaging.mode"),
    ({"averaging": {"k": 3}}, "averaging.k"),              # off the allow-list, away from its default: alone
    ({"model": {"name": "resnet"}}, "model.name"),         # a shared key, a value the engine does not stack
    ({"model": {"norm": "weight"}}, "model.norm"),
])
def test_a_recipe_that_sets_an_unsupported_key_is_trained_alone_and_told_which(sections, key):
    assert population_unsupported(_recipe(**sections)) == key


def test_per_member_and_shared_settings_keep_a_recipe_in_a_population():
    assert population_unsupported(Recipe()) is None
    assert population_unsupported(_recipe(seed=3, epochs=2, model={"dropout": 0.3, "norm": "layer"},
                                          optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.5},
                                          clip={"mode": "norm", "threshold": 0.5}, schedule={"name": "plateau"},
                                          early_stopping={"patience": 2}, init={"scheme": "orthogonal"})) is None


def test_a_key_taken_off_the_allow_list_sends_its_recipes_alone(monkeypatch):
    """The rule is the allow-list: a key the engine stopped honouring is trained alone once set."""
    monkeypatch.setattr(support, "ALLOWED", tuple(k for k in ALLOWED if k != "model.dropout"))
    assert population_unsupported(_recipe()) is None                       # the default: nothing to honour
    assert population_unsupported(_recipe(model={"dropout": 0.2})) == "model.dropout"


def test_the_population_key_ignores_per_member_settings_and_keeps_shared_ones():
    base = population_key(_recipe())
    assert population_key(_recipe(seed=4, name="other", optimizer={"lr": 0.1, "betas": [0.5, 0.9]},
                                  schedule={"name": "cosine"}, model={"dropout": 0.5})) == base
    assert population_key(_recipe(clip={"mode": "norm", "threshold": 2.0})) == base   # none = norm at θ = ∞
    for shared in ({"model": {"width": 7}}, {"data": {"batch_size": 16}}, {"optimizer": {"name": "sgd"}},
                   {"clip": {"mode": "value"}}):
        assert population_key(_recipe(**shared)) != base, shared
