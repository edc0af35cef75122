"""Study specs: arm expansion (grid, leave-one-out, named override sets), seeds, baseline, hash, and one clear
``InputError`` per kind of bad spec, naming the field and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tricklab.errors import InputError
from tricklab.recipe import Recipe, load_recipe
from tricklab.study import StudySpec, higher_is_better, load_study, study_from_dict

ROOT = Path(__file__).resolve().parent.parent

DESIGN_EXAMPLE = """
name: dropout
base: recipes/default.yaml        # a recipe path, or an inline recipe mapping
overrides: {epochs: 10}           # applied to the base in every arm
design: grid                      # grid: every combination of the factors' values
factors:                          # dotted recipe key -> values
  model.dropout: [0.0, 0.2, 0.5, 0.8]
seeds: 5                          # a count (0..n-1) or a list; the same seeds in every arm
metric: test_accuracy
baseline: {model.dropout: 0.0}    # the arm the others are compared with (leave_one_out: the full recipe)
target: {metric: val_accuracy, value: 0.95}   # optional: steps/time to reach it
executor: local                   # local | population | ray (the CLI flag wins)
"""


def write(tmp_path: Path, text: str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def spec(**fields) -> StudySpec:
    data = {"name": "s", "factors": {"model.dropout": [0.0, 0.5]}, "seeds": 2, **fields}
    return study_from_dict(data, ROOT)


def test_design_example_parses(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "default.yaml").write_text((ROOT / "recipes" / "default.yaml").read_text())
    s = load_study(write(tmp_path, DESIGN_EXAMPLE))
    assert [a.name for a in s.arms()] == [f"model.dropout={v}" for v in ("0.0", "0.2", "0.5", "0.8")]
    assert s.seed_list() == [0, 1, 2, 3, 4]
    assert s.baseline_arm() == "model.dropout=0.0"
    assert s.metrics() == ["test_accuracy"] and s.executor == "local" and s.max_retries == 2
    assert s.target is not None and s.target.metric == "val_accuracy" and s.target.better_is_higher
    base = load_recipe(ROOT / "recipes" / "default.yaml")
    for arm, dropout in zip(s.arms(), (0.0, 0.2, 0.5, 0.8)):
        assert arm.overrides == {"model.dropout": dropout}
        assert arm.recipe.model.dropout == dropout and arm.recipe.epochs == 10
        assert arm.recipe.name == f"dropout/{arm.name}"
        assert arm.recipe.optimizer == base.optimizer and arm.recipe.data == base.data
    assert len(s.trials()) == 20


def test_grid_of_two_factors_has_every_combination():
    s = spec(factors={"model.dropout": [0.0, 0.2, 0.5], "optimizer.lr": [0.001, 0.01, 0.1]},
             baseline={"model.dropout": 0.0, "optimizer.lr": 0.01})
    arms = s.arms()
    assert len(arms) == 9 and len({a.name for a in arms}) == 9
    assert arms[1].name == "model.dropout=0.0,optimizer.lr=0.01"
    combos = {(a.recipe.model.dropout, a.recipe.optimizer.lr) for a in arms}
    assert combos == {(d, lr) for d in (0.0, 0.2, 0.5) for lr in (0.001, 0.01, 0.1)}
    for a in arms:
        assert isinstance(a.recipe, Recipe)
        assert a.overrides == {"model.dropout": a.recipe.model.dropout, "optimizer.lr": a.recipe.optimizer.lr}
    assert s.baseline_arm() == "model.dropout=0.0,optimizer.lr=0.01"


def test_grid_baseline_defaults_to_the_first_arm_and_accepts_an_arm_name_or_nested_keys():
    assert spec().baseline_arm() == "model.dropout=0.0"
    assert spec(baseline="model.dropout=0.5").baseline_arm() == "model.dropout=0.5"
    assert spec(baseline={"model": {"dropout": 0.5}}).baseline_arm() == "model.dropout=0.5"
    assert spec(baseline={"model.dropout": 0}).baseline_arm() == "model.dropout=0.0"  # 0 == 0.0


def test_leave_one_out_runs_full_and_one_arm_per_removed_trick():
    s = study_from_dict({
        "name": "loo", "design": "leave_one_out", "seeds": [3, 7],
        "base": {"clip": {"mode": "norm"}, "model": {"norm": "batch"}},
        "remove": {"batchnorm": {"model.norm": "none"}, "clipping": {"clip": {"mode": "none"}}},
    })
    arms = {a.name: a for a in s.arms()}
    assert list(arms) == ["full", "without batchnorm", "without clipping"]
    assert s.baseline_arm() == "full"
    assert arms["full"].overrides == {} and arms["full"].recipe.clip.mode == "norm"
    assert arms["without batchnorm"].recipe.model.norm == "none" and arms["without batchnorm"].recipe.clip.mode == "norm"
    assert arms["without clipping"].overrides == {"clip.mode": "none"}
    assert arms["without clipping"].recipe.clip.mode == "none" and arms["without clipping"].recipe.model.norm == "batch"
    assert s.seed_list() == [3, 7]
    assert s.trials() == [("full", 3), ("without batchnorm", 3), ("without clipping", 3),
                          ("full", 7), ("without batchnorm", 7), ("without clipping", 7)]
    assert s.trial_recipe("without clipping", 7).seed == 7
    assert study_from_dict({**s.model_dump(), "baseline": "batchnorm"}).baseline_arm() == "without batchnorm"


def test_named_override_sets_use_their_labels():
    s = spec(factors={
        "optimizer": {"sgd": {"optimizer.name": "momentum", "optimizer.lr": 0.1},
                      "adam": {"optimizer": {"name": "adamw", "lr": 0.003}}},
        "model.dropout": [0.0, 0.3],
    }, baseline={"optimizer": "adam", "model.dropout": 0.0})
    names = [a.name for a in s.arms()]
    assert names == ["sgd,model.dropout=0.0", "sgd,model.dropout=0.3", "adam,model.dropout=0.0",
                     "adam,model.dropout=0.3"]
    first = s.arms()[0]
    assert first.recipe.optimizer.name == "momentum" and first.recipe.optimizer.lr == 0.1
    assert first.overrides == {"optimizer.name": "momentum", "optimizer.lr": 0.1, "model.dropout": 0.0}
    assert s.baseline_arm() == "adam,model.dropout=0.0"


def test_seeds_as_count_and_list_and_trial_recipes_carry_the_seed():
    s = spec(seeds=3)
    assert s.seed_list() == [0, 1, 2]
    assert s.trials()[:2] == [("model.dropout=0.0", 0), ("model.dropout=0.5", 0)]
    assert spec(seeds=[11, 5, 42]).seed_list() == [11, 5, 42]
    r = s.trial_recipe("model.dropout=0.5", 2)
    assert r.seed == 2 and r.model.dropout == 0.5 and r.name == "s/model.dropout=0.5"


def test_base_as_relative_path_and_inline_mapping(tmp_path):
    write(tmp_path, "epochs: 3\noptimizer: {lr: 0.05}\n", "recipes/mine.yaml")
    path = write(tmp_path, "name: x\nbase: ../recipes/mine.yaml\nfactors: {model.depth: [2, 3]}\n",
                 "studies/x.yaml")
    s = load_study(path)
    assert all(a.recipe.epochs == 3 and a.recipe.optimizer.lr == 0.05 for a in s.arms())
    inline = study_from_dict({"name": "x", "base": {"epochs": 3, "optimizer": {"lr": 0.05}},
                              "factors": {"model.depth": [2, 3]}})
    assert [a.recipe for a in inline.arms()] == [a.recipe for a in s.arms()]
    assert inline.spec_hash() == s.spec_hash()
    default = study_from_dict({"name": "x", "factors": {"model.depth": [2, 3]}})
    assert default.arms()[0].recipe.optimizer == Recipe().optimizer


def test_spec_hash_is_stable_across_key_order_and_changes_with_the_runs():
    a = {"name": "h", "overrides": {"epochs": 2, "optimizer.lr": 0.01},
         "factors": {"model.dropout": [0.0, 0.5]}, "seeds": [0, 1], "metric": "test_accuracy"}
    b = {"seeds": [1, 0], "metric": ["test_loss"], "factors": {"model.dropout": [0.0, 0.5]},
         "overrides": {"optimizer": {"lr": 0.01}, "epochs": 2}, "name": "h", "executor": "ray"}
    ha = study_from_dict(a).spec_hash()
    assert ha == study_from_dict(b).spec_hash() and len(ha) == 64
    assert ha == study_from_dict(yaml.safe_load(yaml.safe_dump(a, sort_keys=True))).spec_hash()
    assert ha != study_from_dict({**a, "seeds": [0, 1, 2]}).spec_hash()
    assert ha != study_from_dict({**a, "overrides": {"epochs": 3}}).spec_hash()


def test_arms_are_copies():
    s = spec()
    s.arms()[0].recipe.model.dropout = 0.9
    assert s.arms()[0].recipe.model.dropout == 0.0


# -- errors: each names its field and what is allowed -----------------------------------------------------------
@pytest.mark.parametrize(("fields", "field", "words"), [
    ({"factors": {"model.dropuot": [0.1]}}, "factors.model.dropuot", ["model.dropout"]),
    ({"factors": {"modle.dropout": [0.1]}}, "factors.modle.dropout", ["model", "optimizer"]),
    ({"factors": {"optimizer": [{"lr": 0.1}]}}, "factors.optimizer", ["optimizer.lr"]),
    ({"factors": {"model.dropout": []}}, "factors.model.dropout", ["at least one"]),
    ({"factors": {"model.dropout": [0.2, 1.5]}}, "factors.model.dropout", ["1.5", "dropout"]),
    ({"factors": {"model.dropout": [0.2, 0.2]}}, "factors.model.dropout", ["twice"]),
    ({"factors": {"init.scheme": ["glorot", "xavier"]}}, "factors", ["same recipe"]),
    ({"factors": {"seed": [1, 2]}}, "factors.seed", ["seeds"]),
    ({"factors": {"opt": {"fast": {"optimizer.lrr": 1}}}}, "factors.opt.fast.optimizer.lrr", ["optimizer.lr"]),
    ({"factors": {"opt": {"bad": {"optimizer.name": "adamx"}}}}, "factors.opt", ["adamx", "sgd"]),
    ({"factors": {"model.dropout": 0.2}}, "factors.model.dropout", ["list"]),
    ({"factors": {}}, "factors", ["recipe.key"]),
    ({"seeds": []}, "seeds", ["count"]),
    ({"seeds": 0}, "seeds", ["n >= 1"]),
    ({"seeds": -3}, "seeds", ["n >= 1"]),
    ({"seeds": [1, 2, 1]}, "seeds", ["duplicate"]),
    ({"seeds": [1, -2]}, "seeds", [">= 0"]),
    ({"seeds": "five"}, "seeds", ["count"]),
    ({"baseline": {"model.dropout": 0.3}}, "baseline", ["model.dropout: 0.0 | 0.5"]),
    ({"baseline": "model.dropout=0.3"}, "baseline", ["model.dropout=0.0", "model.dropout=0.5"]),
    ({"baseline": {"optimizer.lr": 0.1}}, "baseline.optimizer.lr", ["model.dropout"]),
    ({"design": "random"}, "design", ["grid", "leave_one_out"]),
    ({"design": "leave_one_out", "factors": {}}, "remove", ["model.norm"]),
    ({"design": "leave_one_out"}, "factors", ["remove"]),
    ({"remove": {"bn": {"model.norm": "none"}}}, "remove", ["leave_one_out"]),
    ({"metric": "accuracy"}, "metric", ["test_accuracy", "best_epoch"]),
    ({"metric": ["test_accuracy", "f1"]}, "metric", ["val_loss"]),
    ({"target": {"metric": "test_accuracy", "value": 0.9}}, "target.metric", ["val_accuracy", "train_loss"]),
    ({"target": {"metric": "val_accuracy", "value": 0.9, "within": 3}}, "target.within", ["value"]),
    ({"executor": "slurm"}, "executor", ["local", "population", "ray"]),
    ({"base": "nowhere/recipe.yaml"}, "base", ["inline recipe mapping"]),
    ({"base": {"optimizer": {"lr": -1}}}, "base.optimizer.lr", []),
    ({"overrides": {"optimizer.lrr": 0.1}}, "overrides.optimizer.lrr", ["optimizer.lr"]),
    ({"overrides": {"epochs": 0}}, "overrides.epochs", []),
    ({"overrides": {"seed": 3}}, "overrides.seed", ["seeds"]),
    ({"epochz": 3}, "epochz", ["factors", "seeds", "baseline"]),
    ({"max_retries": -1}, "max_retries", []),
    ({"name": ""}, "name", []),
])
def test_bad_specs_name_the_field_and_what_is_allowed(fields, field, words):
    with pytest.raises(InputError) as info:
        spec(**fields)
    err = info.value
    assert err.field == field, str(err)
    for word in words:
        assert word in str(err), (word, str(err))


def test_leave_one_out_errors():
    loo = {"name": "l", "design": "leave_one_out"}
    with pytest.raises(InputError) as info:
        study_from_dict({**loo, "remove": {"clipping": {"clip.mode": "none"}}})  # the default has no clipping
    assert info.value.field == "remove.clipping" and "switches nothing off" in str(info.value)
    with pytest.raises(InputError) as info:
        study_from_dict({**loo, "remove": {"bn": {"model.norm": "sparkle"}}})
    assert info.value.field == "remove.bn" and "sparkle" in str(info.value)
    with pytest.raises(InputError) as info:
        study_from_dict({**loo, "remove": {"bn": {"model.norm": "none"}}, "baseline": "dropout"})
    assert info.value.field == "baseline" and "without bn" in str(info.value)
    with pytest.raises(InputError) as info:
        study_from_dict({**loo, "remove": {"bn": {"model.norm": "none"}}, "baseline": {"model.norm": "none"}})
    assert info.value.field == "baseline" and "full" in str(info.value)


def test_unknown_arm_and_metric_directions():
    with pytest.raises(InputError) as info:
        spec().trial_recipe("model.dropout=0.3", 0)
    assert info.value.field == "arm" and "model.dropout=0.5" in str(info.value)
    assert higher_is_better("test_accuracy") and not higher_is_better("test_loss")
    assert not higher_is_better("wall_seconds") and higher_is_better("val_accuracy")
    with pytest.raises(InputError):
        higher_is_better("f1")


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "name: x\nfactors: {model.dropout: [0.1, 0.2\n"))
    assert info.value.field == "study" and "malformed YAML" in str(info.value) and "line" in str(info.value)
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "name: x\nfactors: {model.dropout: [0.1, 0.2]}\nmetrik: test_loss\n"))
    assert info.value.field == "metrik" and "study.yaml" in str(info.value) and "metric" in str(info.value)
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "name: x\nbase: missing.yaml\nfactors: {model.dropout: [0.1]}\n"))
    assert info.value.field == "base" and str(tmp_path / "missing.yaml") in str(info.value)
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "- just\n- a list\n"))
    assert info.value.field == "study"
    with pytest.raises(InputError) as info:
        load_study(tmp_path / "absent.yaml")
    assert info.value.field == "study" and "not found" in str(info.value)
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "name: x\nfactors: {model.dropout: !!python/object:os.system [1]}\n"))
    assert info.value.field == "study"


def test_a_bad_base_file_names_the_recipe_file_and_field(tmp_path):
    write(tmp_path, "optimizer: {lr: -1}\n", "bad.yaml")
    with pytest.raises(InputError) as info:
        load_study(write(tmp_path, "name: x\nbase: bad.yaml\nfactors: {model.dropout: [0.1]}\n"))
    assert info.value.field == "optimizer.lr" and "bad.yaml" in str(info.value)


def test_a_combination_that_is_invalid_only_together_names_the_arm():
    with pytest.raises(InputError) as info:
        spec(overrides={"optimizer.name": "adam"},
             factors={"optimizer.name": ["adam", "adamw"], "optimizer.decay": ["decoupled", "l2"]})
    assert info.value.field == "factors" and "optimizer.name=adamw,optimizer.decay=l2" in str(info.value)


def test_too_long_arm_names_are_refused():
    with pytest.raises(InputError) as info:
        spec(name="n" * 100, factors={"model.python": ["pkg.mod:" + "f" * 120]})
    assert info.value.field == "name"
