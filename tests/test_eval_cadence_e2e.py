"""Through ``tricklab.train`` (needs run.py to pass ``evals_per_epoch`` to the Trainer and to record the eval-mode
``train_accuracy``): the evaluations reach result.json, metrics.json and the store; the gap's train accuracy is the
ensemble's."""

from __future__ import annotations

import json

import tricklab as tl
from tricklab.store import Store
from tricklab.train.rows import EVALS
from tricklab.train.run import prepare_data
from tricklab.train.trainer import evaluate
from tricklab.tricks.averaging import Ensemble


def test_a_recipe_with_evals_per_epoch_records_them_everywhere(tmp_path):
    recipe = {"data": {"name": "digits"}, "model": {"name": "mlp", "depth": 1, "width": 32}, "epochs": 2}
    one = tl.train({**recipe, "evals_per_epoch": 1}, runs_root=tmp_path / "a")
    four = tl.train({**recipe, "evals_per_epoch": 4}, runs_root=tmp_path / "b", store=tmp_path / "s.sqlite")
    assert all(EVALS not in h for h in one.history)
    assert [[e["step"] for e in h[EVALS]] for h in four.history] == [[5, 10, 15, 21], [26, 31, 36, 42]]
    for a, b in zip(one.history, four.history, strict=True):
        assert a["val_accuracy"] == b["val_accuracy"] and a["train_loss"] == b["train_loss"]
    assert one.test_accuracy == four.test_accuracy
    saved = json.loads((tmp_path / "b" / four.run_id / "result.json").read_text())
    metrics = json.loads((tmp_path / "b" / four.run_id / "metrics.json").read_text())
    assert saved["history"] == metrics == json.loads(json.dumps(four.history))
    with Store(tmp_path / "s.sqlite") as store:
        series = store.metrics(four.run_id)
    assert [s for s, _ in series["evals.val_accuracy"]] == [5, 10, 15, 21, 26, 31, 36, 42]


def test_the_result_has_the_ensembles_eval_mode_train_accuracy(tmp_path):
    recipe = {"data": {"name": "digits", "train_subset": 200}, "epochs": 2, "name": "ens",
              "model": {"name": "mlp", "depth": 1, "width": 32, "dropout": 0.5},
              "averaging": {"mode": "ensemble", "k": 3}}
    result = tl.train(recipe, runs_root=tmp_path)
    run = tmp_path / result.run_id
    from tricklab.recipe import recipe_from_dict
    from tricklab.train.checkpoint import load_checkpoint
    from tricklab.train.run import build_recipe_model

    rec = recipe_from_dict(json.loads(json.dumps(result.recipe)))
    splits = prepare_data(rec)
    members = []
    for k in range(3):
        model = build_recipe_model(rec, splits, rec.seed + k)
        model.load_state_dict(load_checkpoint(run / f"member-{k}")["model"])   # the last epoch's weights
        members.append(model)
    assert result.train_accuracy == evaluate(Ensemble(members), *splits.train_data())["accuracy"]
