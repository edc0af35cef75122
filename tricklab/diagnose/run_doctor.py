"""``doctor_train``: one recipe trained under the doctor, optionally repaired, as ``tricklab doctor`` runs it.

In-run repairs happen inside the run (``DoctorCallback``); a rebuild repair ends the run and this loop starts
the changed recipe in a new run directory, until the run is healthy or the repair budget is spent.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tricklab.diagnose.doctor import INFO_KINDS
from tricklab.diagnose.probes import DEFAULT_EVERY
from tricklab.diagnose.records import Alarm
from tricklab.diagnose.repair import NEEDS_CODE_CHANGE, Repair, RepairPlan
from tricklab.diagnose.trainer_callback import ALARMS_FILE, DoctorCallback
from tricklab.errors import InputError
from tricklab.fsutil import atomic_write_text
from tricklab.recipe import Recipe, apply_overrides, load_recipe, recipe_from_dict, recipe_to_dict, save_recipe
from tricklab.store import Store
from tricklab.train import RunResult, distributed, train
from tricklab.train.events import Callback
from tricklab.train.run import RESULT_FILE, json_safe, metric_rows, named, new_run_dir

REPAIRED_RECIPE = "recipe.repaired.yaml"
"""The recipe a repaired run ended with, beside the run's ``recipe.yaml`` (the one it started from)."""


@dataclass
class DoctorResult:
    """The final run, what the doctor found over all attempts, and what it repaired."""

    result: RunResult
    alarms: list[Alarm]
    repairs: list[Repair] = field(default_factory=list)
    before: dict[str, Any] | None = None
    attempts: int = 1
    info: list[Alarm] = field(default_factory=list)   # advice that is no diagnosis (too many parameters)

    @property
    def diagnosis(self) -> list[str]:
        kinds: list[str] = []
        for a in self.alarms:
            if a.kind not in kinds:
                kinds.append(a.kind)
        return kinds

    def to_json(self) -> dict[str, Any]:
        out = self.result.to_json()
        out.pop("recipe", None)
        out["alarms"] = [a.brief() for a in self.alarms]
        out["diagnosis"] = self.diagnosis
        out["advice"] = {a.kind: a.advice for a in self.alarms}
        out["info"] = [a.brief() for a in self.info]
        out["repairs"] = self.repairs
        out["attempts"] = self.attempts
        if self.repairs:
            out["before"] = self.before
            out["after"] = {"test_accuracy": out["test_accuracy"], "test_loss": out["test_loss"],
                            "val_accuracy": out["val_accuracy"], "val_loss": out["val_loss"], "status": out["status"]}
        return out


def merge_alarms(result: RunResult, doctor_alarms: list[Alarm]) -> list[Alarm]:
    """The doctor's alarms plus the core's own (divergence) of kinds the doctor did not raise; the core's
    capacity warning is advice (``INFO_KINDS``), kept out. ``result.alarms`` is set to all of them (its JSON:
    the ``{kind, layer, step, message}`` list of the CLI contract)."""
    seen = {a.kind for a in doctor_alarms}
    merged = list(doctor_alarms) + [a for a in result.alarms if a.kind not in seen and a.kind not in INFO_KINDS]
    result.alarms = merged
    return merged


def keep_record(outcome: DoctorResult, recipe: Recipe, changes: dict[str, Any],
                store: Store | str | os.PathLike[str] | None) -> None:
    """Write what happened where every reader looks, with the same alarms and repairs in each: the final run's
    ``result.json`` (the doctor's JSON: alarms, diagnosis, info, repairs), ``alarms.json`` (every alarm in
    full, for the report), ``recipe.repaired.yaml`` (the recipe the run ended with: rebuilds and in-run
    changes applied — only when something was repaired) and the store's row and alarms table."""
    result = outcome.result
    if not result.run_dir:
        return
    run_dir = Path(result.run_dir)
    data = {**result.to_json(), **outcome.to_json()}
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(json_safe(data), indent=1))
    atomic_write_text(run_dir / ALARMS_FILE, json.dumps(json_safe([a.to_dict() for a in outcome.alarms]), indent=1))
    if outcome.repairs and any(r["action"] != NEEDS_CODE_CHANGE for r in outcome.repairs):
        final = recipe_to_dict(recipe)
        if changes:
            final = apply_overrides(final, [f"{k}={v}" for k, v in changes.items()])
        save_recipe(recipe_from_dict(final), run_dir / REPAIRED_RECIPE)
    if store is None:
        return
    db = store if isinstance(store, Store) else Store(store)
    try:
        db.finish_run(result.run_id, result.status, json_safe(data), metric_rows(result.history), outcome.alarms)
    finally:
        if db is not store:
            db.close()


def doctor_train(
    recipe: Recipe | str | os.PathLike[str] | None = None,
    *,
    overrides: Sequence[str] | None = None,
    repair: bool = False,
    budget: int = 4,
    every: int = DEFAULT_EVERY,
    runs_root: str | os.PathLike[str] = "runs",
    store: Any = None,
    progress: bool = False,
    callbacks: Sequence[Callback] = (),
) -> DoctorResult:
    """Train ``recipe`` with the doctor watching; with ``repair``, repair what it finds (see ``repair``).

    ``callbacks`` run in every attempt, before the doctor (so it sees what they did). Started by torchrun on several
    processes, process 0 is watched and writes the record; the others train their shards and report nothing."""
    rec = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides or []))
    explicit = "name" in rec.model_fields_set or any(o.partition("=")[0].strip() == "name" for o in overrides or [])
    if isinstance(recipe, Recipe) and overrides:
        rec = recipe_from_dict(apply_overrides(recipe_to_dict(recipe), list(overrides)))
    rec = named(rec, explicit)   # runs/digits-mlp-..., as tricklab train names it
    world = distributed.current_world()
    if world is not None:
        # one run on several processes (``tricklab doctor --nproc``): process 0 probes (its gradients are the
        # whole batch's, all-reduced; its activations its shard's) and keeps the record; a repair would have to
        # change every process alike, so there is none
        if repair:
            raise InputError("--repair", "a run on several processes is diagnosed, not repaired",
                             allowed="repair on one process")
        if not world.is_main:
            return DoctorResult(result=train(rec, store=None, progress=False, callbacks=list(callbacks)), alarms=[])
    plan = RepairPlan(budget=budget) if repair else None
    alarms: list[Alarm] = []
    before = None
    attempts = 0
    while True:
        attempts += 1
        run_dir = new_run_dir(rec, runs_root)   # made by train, once the data and model passed their checks
        cb = DoctorCallback(every=every, run_dir=run_dir, repair=plan, recipe=recipe_to_dict(rec), can_restart=True)
        result = train(rec, run_dir=run_dir, store=store, progress=progress, callbacks=[*callbacks, cb])
        core_info = list(result.alarms)
        alarms += cb.alarms
        before = before or cb.before
        if not (plan is not None and cb.restart):
            break
        rec = recipe_from_dict(apply_overrides(recipe_to_dict(rec), cb.rebuild_overrides))
        _abandon(result, store, f"rebuilt with {', '.join(cb.rebuild_overrides)}")
    alarms = merge_alarms(result, alarms)
    info = list(cb.info) or [a for a in core_info if a.kind in INFO_KINDS][:1]
    if any(a.kind == "overfitting" for a in alarms):
        info = []          # its numbers are the overfitting alarm's evidence now
    outcome = DoctorResult(result=result, alarms=alarms, repairs=plan.log if plan else [], before=before,
                           attempts=attempts, info=info)
    keep_record(outcome, rec, cb.changes, store)
    return outcome


def _abandon(result: RunResult, store: Store | str | os.PathLike[str] | None, reason: str) -> None:
    """An attempt the doctor gave up on to rebuild the recipe is no result: its ``result.json`` and store row say
    ``abandoned`` (with why), so that no report or study ever counts it as a completed run."""
    path = Path(result.run_dir or "") / RESULT_FILE
    if result.run_dir and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        atomic_write_text(path, json.dumps({**data, "status": "abandoned", "abandoned": reason}, indent=1))
    if isinstance(store, Store):
        store.abandon_run(result.run_id, reason)
    elif store is not None:
        with Store(store) as db:
            db.abandon_run(result.run_id, reason)
