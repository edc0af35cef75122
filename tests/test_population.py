"""Population training: a stacked population behaves as its members trained one by one.

References: the sequential Trainer (K = 1, step by step), each member's own autograd gradients, each member's own
torch optimizer and ``tricks.clipping``, and the local executor's store rows.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os

import pytest
import torch
import torch.nn.functional as F
import yaml

from tests.conftest import kill_study_when, last_json, run_cli
from tricklab.population.engine import MemberObserver, PopulationMember, train_population
from tricklab.population.stacked import StackedNet
from tricklab.population.stacked_optim import STACKED_OPTIMIZERS, StackedOptimizer, clip_, member_grad_norms
from tricklab.recipe import recipe_from_dict
from tricklab.store import Store
from tricklab.study.executor_registry import make_executor
from tricklab.study.executors import TrialTask
from tricklab.study.population import PopulationExecutor, plan_units
from tricklab.train.events import Callback
from tricklab.train.run import _trick_callbacks, build_recipe_model, build_recipe_optimizer, prepare_data
from tricklab.train.trainer import Trainer, batches_per_epoch
from tricklab.tricks.clipping import clip_gradients_
from tricklab.tricks.schedules import apply_lr, build_schedule

DATA = {"name": "synthetic", "variant": "teacher", "size": 600, "batch_size": 32}   # 432 train → 14 steps/epoch


pytestmark = pytest.mark.usefixtures("one_thread")


def _recipe(**sections):
    base = {"data": dict(DATA), "epochs": 4, "model": {"name": "mlp", "depth": 2, "width": 32}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return recipe_from_dict(base)


def _double(splits):
    return dataclasses.replace(splits, x_train=splits.x_train.double(), x_val=splits.x_val.double(),
                               x_test=splits.x_test.double())


class _TrainerLosses(Callback):
    """Every step's training loss, from the Trainer's batch events."""

    def __init__(self):
        self.losses = []

    def on_batch_end(self, state):
        self.losses.append(float(state.loss))


class _MemberLosses(MemberObserver):
    """Every step's training loss of a member, from its probe (``probe_every=1``)."""

    def __init__(self):
        self.losses = []

    def on_probe(self, probe):
        self.losses.append(probe.loss)


def _trainer_losses(rec, splits, callbacks=()):
    """The Trainer set up as ``tricklab.train.run`` sets it up for ``rec`` (``callbacks`` after its own)."""
    model = build_recipe_model(rec, splits, rec.seed)
    optimizer = build_recipe_optimizer(rec, model)
    spe = batches_per_epoch(len(splits.x_train), rec.data.batch_size)
    o, s = rec.optimizer, rec.schedule
    schedule = build_schedule(s.name, lr=o.lr, total_steps=rec.epochs * spe, steps_per_epoch=spe, gamma=s.gamma,
                              warmup_steps=int(round(s.warmup_epochs * spe)), step_size_epochs=s.step_size,
                              final_lr=s.final_lr, pct_start=s.pct_start)
    tricks, _ = _trick_callbacks(rec)
    recorder = _TrainerLosses()
    Trainer(model, optimizer, (splits.x_train, splits.y_train), (splits.x_val, splits.y_val), epochs=rec.epochs,
            batch_size=rec.data.batch_size, seed=rec.seed, lr_schedule=schedule,
            callbacks=[recorder, *tricks, *callbacks]).fit()
    return recorder.losses


def _population_losses(rec, splits, fused=True):
    recorder = _MemberLosses()
    train_population([PopulationMember(rec, observer=recorder)], splits=splits, probe_every=1, fused=fused)
    return recorder.losses


def _max_rel(a, b, steps=50):
    assert len(a) >= steps and len(b) >= steps
    return max(abs(x - y) / abs(x) for x, y in zip(a[:steps], b[:steps]))


# -- K = 1 against the Trainer ------------------------------------------------------------------------------
@pytest.mark.parametrize("sections, fused", [
    ({}, False),                                                         # batch norm, AdamW, one-cycle
    ({"model": {"dropout": 0.3}, "optimizer": {"name": "nesterov", "lr": 0.05},
      "clip": {"mode": "norm", "threshold": 0.5}, "schedule": {"name": "cosine"}}, True),
    ({"optimizer": {"name": "adam", "decay": "l2"}, "init": {"scheme": "orthogonal"}}, True),
    ({"model": {"name": "cnn"}}, False),                                 # the default CNN: batch norm, AdamW
    ({"model": {"name": "cnn"}}, True),
    ({"model": {"name": "cnn", "depth": 3, "width": 8, "norm": "group", "dropout": 0.5},
      "optimizer": {"name": "rmsprop", "lr": 0.001}, "clip": {"mode": "agc", "threshold": 0.05}}, True),
])
def test_one_member_follows_the_trainer_float32(sections, fused):
    """MLP and CNN: 50 steps, float32, the loss within 1e-5 relative (dropout masks included). One member runs
    its convolutions in the Trainer's contiguous layout: measured ≤ 2.3e-7 apart after 50 steps for these six;
    in the channels-last layout of a stacked population the convolution rounds differently (the default CNN with
    dropout 0.5: 4.4e-5 after 50 steps)."""
    rec = _recipe(**sections)
    splits = prepare_data(rec)
    assert _max_rel(_trainer_losses(rec, splits), _population_losses(rec, splits, fused)) < 1e-5


@pytest.mark.parametrize("sections", [
    {"model": {"name": "cnn", "depth": 3, "width": 8}},                  # batch norm, AdamW (fused), one-cycle
    {"model": {"name": "cnn", "depth": 3, "width": 8, "norm": "group", "dropout": 0.5},
     "optimizer": {"name": "rmsprop", "lr": 0.001}, "clip": {"mode": "agc", "threshold": 0.05}},
    {"model": {"name": "mlp", "norm": "layer", "activation": "tanh"}, "optimizer": {"name": "normalized", "lr": 0.05},
     "clip": {"mode": "value", "threshold": 0.01}, "schedule": {"name": "plateau"}},
])
def test_one_member_follows_the_trainer_float64(sections):
    """The CNN with batch norm (and the other norms, optimizers and clippings) in float64: the same arithmetic,
    to ~1e-15, where float32 rounding differences (fused against single-tensor optimizer kernels) cannot hide a
    difference in what is computed."""
    rec = _recipe(**sections)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        splits = _double(prepare_data(rec))
        assert _max_rel(_trainer_losses(rec, splits), _population_losses(rec, splits)) < 1e-9
    finally:
        torch.set_default_dtype(default)


# -- per-member gradients, optimizers, clipping ---------------------------------------------------------------
@pytest.mark.parametrize("model", [
    {"name": "cnn", "depth": 3, "width": 8},
    {"name": "mlp", "depth": 2, "width": 16},
    {"name": "mlp", "depth": 2, "width": 16, "norm": "layer"},
    {"name": "cnn", "depth": 2, "width": 8, "norm": "group", "activation": "gelu"},
])
def test_member_gradients_equal_independently_computed_ones(model):
    recs = [_recipe(model=model, seed=seed) for seed in (0, 1, 2)]
    splits = prepare_data(recs[0])
    members = [build_recipe_model(r, splits, r.seed) for r in recs]
    own = copy.deepcopy(members)
    net = StackedNet(members[0], members, splits.input_shape, [0.0] * 3, [None] * 3)
    gen = torch.Generator().manual_seed(5)
    idx = torch.randint(0, len(splits.x_train), (3, 32), generator=gen)
    x, y = splits.x_train[idx], splits.y_train[idx]
    logits = net.forward(x, training=True)
    F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="none").view(3, -1).mean(1).sum().backward()
    for k, m in enumerate(own):
        m.train()
        F.cross_entropy(m(x[k]), y[k]).backward()
        for name, p in m.named_parameters():
            torch.testing.assert_close(net.grad(name)[k], p.grad, rtol=1e-4, atol=1e-6, msg=f"member {k} {name}")
        state = net.member_state(k)
        for name, b in m.named_buffers():   # batch-norm running statistics: per member
            torch.testing.assert_close(state[name], b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sharing", ["none", "two", "all"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("name", STACKED_OPTIMIZERS)
def test_optimizer_updates_each_member_as_its_own_optimizer(name, fused, sharing):
    """Three members with their own lr, weight decay (coupled or decoupled), momentum, betas and eps — or with
    two of them, or all three, sharing every hyperparameter (the fused path then updates their rows, or the
    whole stacked tensors, in one call)."""
    hyper = [{"lr": 0.01, "weight_decay": 0.0, "momentum": 0.9, "betas": (0.9, 0.999), "eps": 1e-8},
             {"lr": 0.003, "weight_decay": 0.01, "momentum": 0.5, "betas": (0.8, 0.99), "eps": 1e-6},
             {"lr": 0.03, "weight_decay": 0.1, "momentum": 0.0 if name != "nesterov" else 0.3,
              "betas": (0.5, 0.9), "eps": 1e-4}]
    decays = ["decoupled", "l2" if name != "adamw" else "decoupled", "decoupled"]
    if sharing == "two":
        hyper[2], decays[2] = hyper[1], decays[1]
    elif sharing == "all":
        hyper, decays = [hyper[1]] * 3, [decays[1]] * 3
    recs = [_recipe(seed=k, optimizer={"name": name, "decay": d, **h}) for k, (h, d) in enumerate(zip(hyper, decays))]
    splits = prepare_data(recs[0])
    members = [build_recipe_model(r, splits, r.seed) for r in recs]
    own = copy.deepcopy(members)
    own_opts = [build_recipe_optimizer(r, m) for r, m in zip(recs, own)]
    net = StackedNet(members[0], members, splits.input_shape, [0.0] * 3, [None] * 3)
    o = [r.optimizer for r in recs]
    opt = StackedOptimizer(name, list(net.params.values()), [n in net.decayed for n in net.params],
                           weight_decay=[x.weight_decay for x in o],
                           decoupled=[x.decay == "decoupled" for x in o], momentum=[x.momentum for x in o],
                           betas=[x.betas for x in o], eps=[x.eps for x in o], fused=fused)
    gen = torch.Generator().manual_seed(1)
    for step in range(4):
        lrs = [x.lr * (1 - 0.2 * step) for x in o]          # a schedule changes η between steps
        for k, m in enumerate(own):
            for pname, p in m.named_parameters():
                g = torch.randn(p.shape, generator=gen) * (10.0 if step == 2 else 1.0)
                p.grad = g.clone()
                net.grad(pname)[k].copy_(g)
            apply_lr(own_opts[k], lrs[k])
            own_opts[k].step()
        opt.step(lrs)
    for k, m in enumerate(own):
        state = net.member_state(k)
        for pname, p in m.named_parameters():
            torch.testing.assert_close(state[pname], p.detach(), rtol=2e-5, atol=1e-6, msg=f"member {k} {pname}")


@pytest.mark.parametrize("mode", ["norm", "unit", "value", "agc"])
def test_clipping_is_per_member(mode):
    """Each member's gradient norm is its own (a huge gradient in member 0 leaves member 1 untouched), and each
    member is clipped exactly as ``tricks.clipping`` clips it alone, at its own threshold."""
    recs = [_recipe(seed=k) for k in range(2)]
    splits = prepare_data(recs[0])
    members = [build_recipe_model(r, splits, r.seed) for r in recs]
    own = copy.deepcopy(members)
    net = StackedNet(members[0], members, splits.input_shape, [0.0, 0.0], [None, None])
    thresholds = [0.5, 0.05] if mode == "agc" else [0.5, 2.0]
    gen = torch.Generator().manual_seed(3)
    for k, m in enumerate(own):
        for pname, p in m.named_parameters():
            g = torch.randn(p.shape, generator=gen) * (100.0 if k == 0 else 0.01)
            p.grad = g.clone()
            net.grad(pname)[k].copy_(g)
    grads = [net.grad(n) for n in net.param_names]
    norms = member_grad_norms(grads)
    fired = clip_(grads, mode, torch.tensor(thresholds), norms, [net.param(n).detach() for n in net.param_names])
    for k, m in enumerate(own):
        stats = clip_gradients_(list(m.parameters()), mode, thresholds[k])
        torch.testing.assert_close(norms[k], stats.norm_before, rtol=1e-5, atol=0)
        assert bool(fired[k]) == bool(stats.fired)
        for pname, p in m.named_parameters():
            torch.testing.assert_close(net.grad(pname)[k], p.grad, rtol=1e-5, atol=1e-7)
    assert bool(fired[0]) and (mode == "agc" or not bool(fired[1]))
    if mode == "norm":
        assert member_grad_norms(grads)[0].item() == pytest.approx(0.5, rel=1e-5)


def test_an_observer_gets_the_training_split_evaluated_like_validation_as_the_trainers_doctor_does():
    """The doctor's like-for-like overfitting input (``training_subset`` in eval mode, the epoch's final weights)
    reaches a population member's observer as the Trainer's doctor computes it: one member against the Trainer
    (float64, so the two loops agree to rounding), each epoch."""
    from tricklab.diagnose.trainer_callback import DoctorCallback

    class Epochs(MemberObserver):
        evaluates_training_split = True

        def __init__(self):
            self.metrics = []

        def on_epoch_end(self, epoch, step, metrics):
            self.metrics.append(metrics)

    rec = _recipe(model={"dropout": 0.3})                                   # train mode and eval mode differ
    observer, cb = Epochs(), DoctorCallback()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        splits = _double(prepare_data(rec))
        result = train_population([PopulationMember(rec, observer=observer)], splits=splits)[0]
        _trainer_losses(rec, splits, callbacks=[cb])
    finally:
        torch.set_default_dtype(default)
    assert "train_eval_loss" not in result.history[-1]                     # for the observer, not the history
    trainer_side = list(cb.doctor.ctx.epochs)
    assert len(observer.metrics) == len(trainer_side) == rec.epochs
    for ours, theirs in zip(observer.metrics, trainer_side):
        assert ours["train_eval_loss"] == pytest.approx(theirs.train_eval_loss, rel=1e-9)
        assert ours["train_eval_accuracy"] == theirs.train_eval_accuracy
        assert ours["train_eval_accuracy"] != pytest.approx(ours["train_accuracy"], abs=1e-9)  # not the running mean


# -- members that leave early -------------------------------------------------------------------------------
def test_a_stopped_member_is_frozen_at_its_best_weights():
    """Member 0 stops after epoch 2 (nothing improves by 10) and keeps its epoch-1 weights, untouched by the
    two more epochs member 1 trains; trained alone it ends identically."""
    stopper = _recipe(early_stopping={"patience": 1, "min_delta": 10.0})
    other = _recipe(seed=1)
    splits = prepare_data(stopper)
    both = train_population([PopulationMember(stopper), PopulationMember(other)], splits=splits)
    alone = train_population([PopulationMember(stopper)], splits=splits)[0]
    stopped, full = both
    assert stopped.status == "stopped_early" and stopped.epochs == 2 and stopped.best_epoch == 1
    assert full.status == "completed" and full.epochs == 4
    assert stopped.val_loss == pytest.approx(stopped.history[0]["val_loss"], rel=1e-6)   # epoch-1 weights
    assert stopped.test_accuracy == alone.test_accuracy
    assert stopped.test_loss == pytest.approx(alone.test_loss, rel=1e-6)


def test_members_that_leave_together_are_evaluated_together_at_the_weights_they_end_with(monkeypatch):
    """Two members stop at the same epoch and leave together: their test, validation and training splits are
    evaluated in one stacked pass, at the weights early stopping restored (epoch 1's), and give what each
    member's own evaluation gives when it is trained alone (float64: to rounding)."""
    from tricklab.population import engine

    together_calls = []
    stacked = engine._Population._final_evaluations

    def spy(self, members):
        together_calls.append(len(members))
        return stacked(self, members)

    monkeypatch.setattr(engine._Population, "_final_evaluations", spy)
    recs = [_recipe(seed=s, early_stopping={"patience": 1, "min_delta": 10.0}) for s in (0, 1)]
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        splits = _double(prepare_data(recs[0]))
        both = train_population([PopulationMember(r) for r in recs], splits=splits)
        alone = [train_population([PopulationMember(r)], splits=splits)[0] for r in recs]
    finally:
        torch.set_default_dtype(default)
    assert together_calls == [2]                  # one stacked evaluation; a member alone is the Trainer's
    for together, single in zip(both, alone):
        assert together.status == "stopped_early" and together.best_epoch == 1
        assert together.val_loss == pytest.approx(together.history[0]["val_loss"], rel=1e-9)   # restored
        for split in ("test", "val", "train"):
            assert getattr(together, f"{split}_loss") == pytest.approx(getattr(single, f"{split}_loss"), rel=1e-9)
            assert getattr(together, f"{split}_accuracy") == getattr(single, f"{split}_accuracy")


def test_a_diverging_member_leaves_the_others_untouched(tmp_path):
    bad = _recipe(optimizer={"name": "sgd", "lr": 1e5}, schedule={"name": "constant"})
    good = _recipe(seed=1, optimizer={"name": "sgd", "lr": 0.05})
    splits = prepare_data(good)
    done = []
    results = train_population([PopulationMember(bad, tmp_path / "bad"), PopulationMember(good, tmp_path / "good")],
                               splits=splits, on_done=lambda i, r: done.append(i))
    alone = train_population([PopulationMember(good)], splits=splits)[0]
    assert results[0].status == "diverged" and results[0].test_accuracy is None
    assert results[0].diverged_step is not None
    assert any(a["kind"] == "nan_loss" for a in results[0].to_json()["alarms"])
    assert done == [0, 1]                                   # reported as soon as it diverged
    assert results[1].status == "completed"
    assert results[1].test_loss == pytest.approx(alone.test_loss, rel=1e-5)
    assert (tmp_path / "bad" / "result.json").is_file() and (tmp_path / "good" / "metrics.json").is_file()


# -- the executor ---------------------------------------------------------------------------------------------
def test_trials_that_cannot_share_form_separate_populations(tmp_path):
    def task(arm, seed, **sections):
        from tricklab.recipe import recipe_to_dict

        return TrialTask(arm, seed, recipe_to_dict(_recipe(seed=seed, **sections)), str(tmp_path / arm / str(seed)))

    tasks = ([task("mlp", s, model={"dropout": 0.1 * s}, optimizer={"lr": 0.001 * (s + 1)}) for s in range(3)]
             + [task("cnn", s, model={"name": "cnn", "depth": 2, "width": 8}) for s in range(3)]
             + [task("resnet", 0, model={"name": "resnet", "depth": 2, "width": 8})]
             + [task("big-batch", 0, data={"batch_size": 64})])
    units = plan_units(tasks, workers=1)
    populations = [sorted((t.arm, t.seed) for t in u.tasks) for u in units if u.population]
    singles = [[t.arm for t in u.tasks] for u in units if not u.population]
    assert sorted(populations) == [[("cnn", 0), ("cnn", 1), ("cnn", 2)], [("mlp", 0), ("mlp", 1), ("mlp", 2)]]
    assert sorted(singles) == [["big-batch"], ["resnet"]]   # alone in its group / not stackable: sequential
    assert [len(u.tasks) for u in plan_units(tasks[:3] + tasks[3:6], workers=2)] == [3, 3]
    assert [len(u.tasks) for u in plan_units(tasks[:3] + tasks[:3], workers=2)] == [3, 3]   # both workers busy
    assert isinstance(make_executor("population", workers=2), PopulationExecutor)


TINY = {"name": "tinypop", "base": {"data": dict(DATA), "model": {"name": "mlp", "depth": 1, "width": 16}, "epochs": 2},
        "factors": {"model.dropout": [0.0, 0.3]}, "seeds": 2, "metric": "test_accuracy"}


@pytest.mark.slow
def test_population_study_fills_the_store_like_the_local_executor(tmp_path):
    """``tricklab study --executor population --json``; the same study with the local executor (in-process
    driver) gives store rows of the same shape: result keys, history keys, metric series, run files."""
    from tricklab.study import study_from_dict
    from tricklab.study.runner import run_study

    spec = tmp_path / "study.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    (tmp_path / "population").mkdir()
    store = tmp_path / "population" / "s.sqlite"
    r = run_cli("study", str(spec), "--store", str(store), "--executor", "population", "--workers", "1", "--json",
                "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["trials_total"] == out["trials_completed"] == 4 and out["trials_failed"] == 0
    assert out["trained_now"] == 4 and all(a["n"] == 2 for a in out["arms"])
    run_study(study_from_dict(TINY), store=tmp_path / "local" / "s.sqlite", executor="local", workers=1,
              progress=False, report=False)
    rows, series = {}, {}
    for executor in ("population", "local"):
        with Store(tmp_path / executor / "s.sqlite") as db:
            rows[executor] = {(t["arm"], t["seed"]): t for t in db.trials("tinypop")}
            series[executor] = {run["id"]: {name: len(points) for name, points in db.metrics(run["id"]).items()}
                                for run in db.runs("tinypop")}
    pop, local = rows["population"], rows["local"]
    assert pop.keys() == local.keys()
    for key, t in pop.items():
        assert t["executor"] == "population" and local[key]["executor"] == "local"
        assert t["status"] == local[key]["status"] == "completed"
        a, b = t["result"], local[key]["result"]
        assert a.keys() == b.keys()
        assert [h.keys() for h in a["history"]] == [h.keys() for h in b["history"]]
        assert a["test_accuracy"] == pytest.approx(b["test_accuracy"], abs=0.02)
        for name in ("recipe.yaml", "result.json", "metrics.json", "probes.jsonl", "alarms.json"):
            assert os.path.isfile(os.path.join(a["run_dir"], name)), name
    assert series["population"] == series["local"]   # the same metric series, as long, per run


@pytest.mark.slow
def test_sigkill_of_a_population_study_then_rerun(tmp_path):
    """Members with 1 epoch finish (and are stored) while those with 12 still train; the driver and its worker
    are killed; the same command completes the study: every trial once, none finished trained again."""
    spec = {**TINY, "name": "killpop", "factors": {"epochs": [1, 12]}, "seeds": 2}
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(spec))
    store = tmp_path / "s.sqlite"
    done_before = kill_study_when(["study", str(p), "--store", str(store), "--executor", "population",
                                   "--workers", "1", "--quiet", "--no-report"], tmp_path, store, completed=2)
    assert 2 <= done_before < 4, done_before
    with Store(store) as db:
        finished_at = {(t["arm"], t["seed"]): t["finished"] for t in db.trials("killpop") if t["status"] == "completed"}
    r = run_cli("study", str(p), "--store", str(store), "--executor", "population", "--workers", "1", "--json",
                "--no-report", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = last_json(r.stdout)
    assert out["trials_completed"] == 4 and out["trained_now"] == 4 - len(finished_at)
    with Store(store) as db:
        trials = db.trials("killpop")
        assert len(trials) == 4 and len(db.runs("killpop")) == 4
        for t in trials:
            if (t["arm"], t["seed"]) in finished_at:
                assert t["finished"] == finished_at[(t["arm"], t["seed"])] and t["attempts"] == 1
            assert t["result"]["epochs"] == t["result"]["recipe"]["epochs"]
    assert math.isfinite(out["arms"][0]["mean"])
