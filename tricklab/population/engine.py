"""Population training: many small models of one architecture trained together, as one stacked model.

An ablation of small models is a few thousand tiny steps per run, dominated by per-step overhead (Python,
kernel launches, small matrix products that leave the vector units idle). ``train_population`` trains K
recipes that share data, architecture and batch size in one loop: one gather of K batches, one forward and
one backward pass of the stacked model (``tricklab.population.stacked``), per-member clipping and one optimizer
update (``tricklab.population.stacked_optim``).

What each member keeps as its own, exactly as if it were trained alone by ``tricklab.train.train``:

- its initial weights (``build_recipe_model`` with its seed: the same RNG draws, any init scheme) and its
  dropout masks (a generator that continues the global RNG where its init left it; on CUDA the Trainer's fused
  dropout kernel draws differently, so masks are only equal in distribution there);
- its data order (``data_order_generator(seed, epoch)``, the Trainer's ``batches_per_epoch`` slicing);
- learning rate and schedule (plateau included), weight decay (coupled or decoupled), momentum/betas/eps,
  dropout rate, clipping threshold, batch-norm statistics, early stopping (a stopped member is restored to its
  best weights and leaves the population), its number of epochs;
- its history (the Trainer's per-epoch metrics, same names), ``RunResult``, and run directory
  (``recipe.yaml``, ``metrics.json`` after every epoch, ``result.json``);
- its probes: every ``probe_every`` steps the per-layer statistics of ``tricklab.diagnose.probes`` computed per
  member (``population_probe``), handed to the member's ``MemberObserver`` (the doctor, in studies).

A member computes what the Trainer computes: in float64 a population of K = 1 follows the Trainer's loss to
~1e-15 over 50 steps (CNN and MLP with batch, group or layer norm; tests/test_population.py), and each
optimizer rule matches its torch.optim reference per member. In float32 a population of K = 1 stays within
2.3e-7 of the Trainer's loss over 50 steps (MLP and CNN, dropout masks included, on CPU: one member runs the
Trainer's contiguous layout). In a stack the kernels round differently — the grouped channels-last convolution
against ``conv1d``, torch's fused AdamW kernel against its single-tensor loop — and batch norm with Adam-type
updates amplifies the one-ulp differences chaotically over hundreds of steps, as it does the Trainer's own
between 1 and 2 torch threads (~4e-3 after 50 steps): such a member is an equally valid sample, not a
bit-identical copy. ``fused=False`` runs the single-tensor loop. A member whose loss turns non-finite is
detected at the Trainer's cadence (every ``check_every`` steps and at the end of an epoch), marked diverged and
dropped; the others are unaffected (no operation mixes members).

Not done here (``population_unsupported`` says which; the population executor trains those recipes on their
own): user models (``model.python``), weight averaging and ensembles (``averaging``), weight normalisation,
architectures with their own forward pass (``resnet``, ``inception``). Members write no checkpoints: a
population interrupted mid-way is retrained from the start.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data import Splits
from tricklab.fsutil import atomic_write_text
from tricklab.population.probe import MemberProbe, PopulationProbe, layer_kinds
from tricklab.population.stacked import StackedNet
from tricklab.population.stacked_optim import StackedOptimizer, clip_, member_grad_norms
from tricklab.recipe import Recipe, recipe_to_dict, save_recipe
from tricklab.train.callbacks import EarlyStoppingCallback, PlateauSchedule
from tricklab.train.events import TrainState
from tricklab.train.memory import retain_freed_memory
from tricklab.train.run import (
    METRICS_FILE,
    RECIPE_FILE,
    RESULT_FILE,
    RunResult,
    best_epoch,
    build_recipe_model,
    core_alarms,
    json_safe,
    prepare_data,
    select_device,
)
from tricklab.train.trainer import batches_per_epoch, data_order_generator, evaluate, training_subset
from tricklab.tricks.clipping import CLIPPERS
from tricklab.tricks.schedules import build_schedule


class MemberObserver:
    """Watches one member (the population executor puts the doctor here). Every method is optional.

    ``evaluates_training_split``: the observer's epoch metrics also carry ``train_eval_loss`` and
    ``train_eval_accuracy`` — the training split evaluated as the validation split is, on the subset the
    Trainer's doctor uses (``tricklab.train.trainer.training_subset``)."""

    evaluates_training_split: bool = False

    def on_start(self, num_params: int, num_examples: int) -> None: ...
    def on_probe(self, probe: MemberProbe) -> None: ...
    def on_epoch_end(self, epoch: int, step: int, metrics: dict[str, float]) -> None: ...
    def on_end(self, status: str, step: int, diverged_step: int | None) -> None: ...


@dataclass
class PopulationMember:
    """One recipe to train in a population, where its files go, and who watches it."""

    recipe: Recipe
    run_dir: str | Path | None = None
    observer: MemberObserver | None = None


def population_unsupported(recipe: Recipe) -> str | None:
    """Why ``recipe`` cannot be trained in a population (None when it can, as far as the recipe tells;
    ``StackedNet`` may still refuse an architecture with ``NotStackable``)."""
    if recipe.model.python:
        return "user models (model.python) are trained on their own"
    if recipe.averaging.mode != "none":
        return f"averaging: {recipe.averaging.mode} is not vectorised"
    if recipe.model.norm == "weight":
        return "weight normalisation is not vectorised"
    if recipe.model.name not in ("mlp", "cnn"):
        return f"model {recipe.model.name!r} has its own forward pass (only mlp and cnn are stacked)"
    return None


def population_key(recipe: Recipe) -> str:
    """Recipes with equal keys can share one population: everything but the per-member settings."""
    d = recipe_to_dict(recipe)
    for key in ("name", "seed", "epochs", "init", "schedule", "early_stopping"):
        d.pop(key, None)
    d["model"].pop("dropout", None)
    for key in ("lr", "weight_decay", "decay", "momentum", "betas", "eps"):
        d["optimizer"].pop(key, None)
    mode = CLIPPERS.canonical(d["clip"]["mode"])
    d["clip"] = {"mode": "norm" if mode == "none" else mode}   # none = norm with θ = ∞ (factor exactly 1)
    return json.dumps(d, sort_keys=True)


@dataclass
class _Member:
    index: int
    recipe: Recipe
    run_dir: Path | None
    observer: MemberObserver
    model: nn.Module
    state: TrainState
    schedule: list[float]
    stopper: EarlyStoppingCallback | None
    plateau: PlateauSchedule | None
    threshold: float                     # clipping θ (∞: no clipping for this member)


class _RowView:
    """What the early-stopping callback sees as "the model" of a member while it trains: its row."""

    def __init__(self, population: _Population, member: _Member) -> None:
        self.population, self.member = population, member

    def state_dict(self) -> dict[str, Tensor]:
        return self.population.net.member_state(self.population.row(self.member))

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.population.net.load_member_state(self.population.row(self.member), state)


def train_population(
    members: Sequence[PopulationMember],
    *,
    splits: Splits | None = None,
    on_done: Callable[[int, RunResult], None] | None = None,
    probe_every: int | None = None,
    check_every: int = 25,
    fused: bool = True,
) -> list[RunResult]:
    """Train every member (see the module docstring); returns their ``RunResult``s in input order.

    ``splits``: the prepared data (else loaded from the first recipe; every recipe must share the data
    section, ``population_key``); ``on_done(i, result)`` is called as soon as member i is finished (stopped
    early or diverged members finish before the others); ``probe_every``: per-member probes for observers;
    ``fused``: torch's fused optimizer kernels (faster; see ``StackedOptimizer``). Raises glibc's malloc
    thresholds for the whole process once (``tricklab.train.memory``): freed memory is then kept for reuse.
    """
    return _Population(members, splits, probe_every, check_every, fused).fit(on_done)


class _Population:
    def __init__(self, members: Sequence[PopulationMember], splits: Splits | None, probe_every: int | None,
                 check_every: int, fused: bool = True) -> None:
        if not members:
            raise ValueError("a population needs at least one member")
        keys = {population_key(m.recipe) for m in members}
        if len(keys) > 1:
            raise ValueError("the members differ in what a population shares (data, architecture, batch size, ...)")
        for m in members:
            reason = population_unsupported(m.recipe)
            if reason:
                raise ValueError(reason)
        self.started = time.perf_counter()
        retain_freed_memory()
        ref = members[0].recipe
        self.device = select_device(ref.device)
        self.splits = splits if splits is not None else prepare_data(ref, self.device)
        s = self.splits
        self.n = len(s.x_train)
        self.batch_size = min(ref.data.batch_size, self.n)
        self.steps_per_epoch = batches_per_epoch(self.n, self.batch_size)
        self.probe_every = probe_every
        self.check_every = max(1, check_every)
        self.members: list[_Member] = []
        models, generators = [], []
        for i, pm in enumerate(members):
            rec = pm.recipe
            model = build_recipe_model(rec, s, rec.seed)
            generators.append(_continue_rng(self.device))
            models.append(model)
            self.members.append(self._member(i, pm, model))
        template = models[max(range(len(models)), key=lambda i: members[i].recipe.model.dropout)]
        self.net = StackedNet(template, models, s.input_shape, [m.recipe.model.dropout for m in members], generators)
        self.kinds = layer_kinds(template)
        o = [m.recipe.optimizer for m in members]
        self.optimizer = StackedOptimizer(ref.optimizer.name, list(self.net.params.values()),
                                          [n in self.net.decayed for n in self.net.params],
                                          weight_decay=[x.weight_decay for x in o],
                                          decoupled=[x.decay == "decoupled" for x in o],
                                          momentum=[x.momentum for x in o], betas=[tuple(x.betas) for x in o],
                                          eps=[x.eps for x in o], fused=fused)
        self.clip_mode = CLIPPERS.canonical(ref.clip.mode)
        if self.clip_mode == "none" and any(CLIPPERS.canonical(m.recipe.clip.mode) == "norm" for m in members):
            self.clip_mode = "norm"
        self.active = list(self.members)
        self.results: dict[int, RunResult] = {}
        self._finish: Callable[[int, RunResult], None] | None = None

    def _member(self, i: int, pm: PopulationMember, model: nn.Module) -> _Member:
        rec = pm.recipe
        o, s = rec.optimizer, rec.schedule
        spe = self.steps_per_epoch
        schedule = build_schedule(
            s.name, lr=o.lr, total_steps=rec.epochs * spe, steps_per_epoch=spe, gamma=s.gamma,
            warmup_steps=int(round(s.warmup_epochs * spe)), step_size_epochs=s.step_size, final_lr=s.final_lr,
            pct_start=s.pct_start)
        stopper = None
        if rec.early_stopping.patience > 0:
            stopper = EarlyStoppingCallback(rec.early_stopping.patience, rec.early_stopping.monitor,
                                            rec.early_stopping.min_delta)
        plateau = PlateauSchedule(s.factor, s.patience) if s.name == "plateau" else None
        run_dir = Path(pm.run_dir) if pm.run_dir is not None else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(rec, run_dir / RECIPE_FILE)
        mode = CLIPPERS.canonical(rec.clip.mode)
        state = TrainState(None, model, None, steps_per_epoch=spe)  # type: ignore[arg-type]
        observer = pm.observer or MemberObserver()
        observer.on_start(sum(p.numel() for p in model.parameters()), self.n)
        return _Member(i, rec, run_dir, observer, model, state,
                       [schedule(t) for t in range(rec.epochs * spe)], stopper, plateau,
                       rec.clip.threshold if mode != "none" else math.inf)

    def row(self, member: _Member) -> int:
        return self.active.index(member)

    # -- the loop ----------------------------------------------------------------------------------------
    def fit(self, on_done: Callable[[int, RunResult], None] | None) -> list[RunResult]:
        self._finish = on_done
        for m in self.members:
            m.state.model = _RowView(self, m)  # type: ignore[assignment]
        self.train_started = time.perf_counter()
        epoch = 0
        while self.active:
            self._run_epoch(epoch)
            epoch += 1
        return [self.results[m.index] for m in self.members]

    def _run_epoch(self, epoch: int) -> None:
        s, net, dev = self.splits, self.net, self.device
        epoch_start = time.perf_counter()
        for m in self.active:
            m.state.epoch_metrics = {}
        K = len(self.active)
        orders = torch.stack([torch.randperm(self.n, generator=data_order_generator(m.recipe.seed, epoch))
                              for m in self.active]).to(dev)
        loss_sum = torch.zeros(K, dtype=torch.float64, device=dev)
        correct = torch.zeros(K, dtype=torch.int64, device=dev)
        first_bad = torch.full((K,), -1, dtype=torch.int64, device=dev)
        fired = torch.zeros(K, dtype=torch.int64, device=dev)
        norm_sum = torch.zeros(K, dtype=torch.float64, device=dev)
        norm_max = torch.zeros(K, dtype=torch.float64, device=dev)
        threshold = torch.tensor([m.threshold for m in self.active], dtype=torch.float32, device=dev)
        seen = count = 0
        bs = self.batch_size
        for b in range(self.steps_per_epoch):
            step = self.active[0].state.step
            idx = orders[:, b * bs:(b + 1) * bs]
            x, y = s.x_train[idx], s.y_train[idx]
            lrs = [m.schedule[step] * m.state.lr_scale for m in self.active]
            probe = None
            if self.probe_every and step % self.probe_every == 0:
                probe = PopulationProbe(net, self.kinds)
            logits = net.forward(x, training=True, tape=probe.begin() if probe else None)
            losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                     reduction="none").view(K, -1).mean(dim=1)
            net.zero_grad()
            losses.sum().backward()
            grads = [p.grad for p in net.params.values()]
            norms = member_grad_norms(grads)
            if probe:
                probe.after_backward()
            weights = [p.detach() for p in net.params.values()] if self.clip_mode == "agc" else ()
            clipped = clip_(grads, self.clip_mode, threshold, norms, weights)
            self.optimizer.step(lrs)
            with torch.no_grad():
                losses = losses.detach()
                loss_sum += losses.double() * idx.shape[1]
                correct += (logits.detach().argmax(dim=-1) == y).sum(dim=1)
                first_bad.copy_(torch.where(~torch.isfinite(losses) & (first_bad < 0), step, first_bad))
                fired += clipped.to(torch.int64)
                norm_sum += norms.double()
                torch.maximum(norm_max, norms.double(), out=norm_max)
            seen += idx.shape[1]
            count += 1
            for m, lr in zip(self.active, lrs):
                m.state.step += 1
                m.state.lr = lr
            if probe:
                records = probe.after_step(step=step, epochs=[epoch] * K, x=x, losses=losses, grad_norms=norms,
                                           lrs=lrs)
                for m, record in zip(self.active, records):
                    m.observer.on_probe(record)
            last = b == self.steps_per_epoch - 1
            if (step + 1) % self.check_every == 0 or last:
                bad = first_bad.tolist()
                if any(v >= 0 for v in bad):
                    acc = (loss_sum, correct, fired, norm_sum, norm_max)
                    diverged = [m for m, v in zip(self.active, bad) if v >= 0]
                    for m, v in zip(self.active, bad):
                        if v >= 0:
                            m.state.status, m.state.diverged_step = "diverged", v
                            m.state.stop, m.state.stop_reason = True, f"non-finite loss at step {v}"
                            self._end_epoch(m, epoch, self.row(m), acc, seen, count, epoch_start, None)
                    keep = [r for r, v in enumerate(bad) if v < 0]
                    loss_sum, correct, fired, norm_sum, norm_max, first_bad, threshold = (
                        t[keep] for t in (*acc, first_bad, threshold))
                    for m in diverged:
                        self._finalize(m)
                    self._compact(keep)
                    if not self.active:
                        return
                    K = len(self.active)
                    orders = orders[keep]

        val = self._evaluate_split(self.splits.x_val, self.splits.y_val)
        fit = None
        if val is not None and any(getattr(m.observer, "evaluates_training_split", False) for m in self.active):
            idx = training_subset(self.n, len(self.splits.x_val), self.device)
            fit = self._evaluate_split(self.splits.x_train[idx], self.splits.y_train[idx])
        acc = (loss_sum, correct, fired, norm_sum, norm_max)
        done = []
        for r, m in enumerate(self.active):
            self._end_epoch(m, epoch, r, acc, seen, count, epoch_start, None if val is None else (val[0][r], val[1][r]),
                            None if fit is None else (fit[0][r], fit[1][r]))
            m.state.epoch += 1
            if m.state.stop or m.state.epoch >= m.recipe.epochs:
                done.append(m)
        if done:
            keep = [r for r, m in enumerate(self.active) if m not in done]
            for m in done:
                self._finalize(m)
            self._compact(keep)

    def _end_epoch(self, m: _Member, epoch: int, r: int, acc: tuple[Tensor, ...], seen: int, count: int,
                   epoch_start: float, val: tuple[float, float] | None,
                   fit: tuple[float, float] | None = None) -> None:
        """The member's epoch metrics, in the Trainer's order and names, and its epoch-end callbacks (``fit``:
        the training subset evaluated like validation, for the observer only)."""
        loss_sum, correct, fired, norm_sum, norm_max = acc
        st = m.state
        metrics: dict[str, float] = {"epoch": epoch + 1, "step": st.step, "lr": st.lr,
                                     "train_loss": loss_sum[r].item() / max(seen, 1),
                                     "train_accuracy": correct[r].item() / max(seen, 1)}
        if st.status != "diverged" and val is not None:
            metrics.update(val_loss=val[0], val_accuracy=val[1])
        metrics["epoch_seconds"] = time.perf_counter() - epoch_start
        st.epoch_metrics.update(metrics)
        observed = {k: v for k, v in st.epoch_metrics.items() if isinstance(v, (int, float))}
        if fit is not None and st.status != "diverged":
            observed.update(train_eval_loss=fit[0], train_eval_accuracy=fit[1])
        m.observer.on_epoch_end(epoch, st.step, observed)
        if count:
            st.epoch_metrics["clip_fraction"] = fired[r].item() / count
            st.epoch_metrics["grad_norm_mean"] = norm_sum[r].item() / count
            st.epoch_metrics["grad_norm_max"] = norm_max[r].item()
        for cb in (m.stopper, m.plateau):
            if cb is not None:
                cb.on_epoch_end(st)
        if m.run_dir is not None:
            atomic_write_text(m.run_dir / METRICS_FILE,
                              json.dumps(json_safe(st.history + [st.epoch_metrics]), indent=1))
        st.history.append(dict(st.epoch_metrics))

    @torch.no_grad()
    def _evaluate_split(self, x: Tensor, y: Tensor, batch_size: int = 2048) -> tuple[list[float], list[float]] | None:
        """Every member's mean loss and accuracy on (x, y), in eval mode (stacked); None when empty."""
        if not len(x):
            return None
        K = len(self.active)
        loss_sum = torch.zeros(K, dtype=torch.float64, device=x.device)
        correct = torch.zeros(K, dtype=torch.int64, device=x.device)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = self.net.forward(xb.unsqueeze(0).expand(K, *xb.shape), training=False)
            losses = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.repeat(K), reduction="none").view(K, -1)
            loss_sum += losses.mean(dim=1).double() * len(yb)
            correct += (out.argmax(dim=-1) == yb).sum(dim=1)
        n = len(x)
        losses_out = [v / n if math.isfinite(v / n) else float("nan") for v in loss_sum.tolist()]
        return losses_out, [c / n for c in correct.tolist()]

    def _compact(self, keep: list[int]) -> None:
        if len(keep) == len(self.active):
            return
        self.active = [self.active[r] for r in keep]
        if not keep:
            return
        self.net.keep(keep)
        self.optimizer.keep(keep, list(self.net.params.values()))

    def _finalize(self, m: _Member) -> None:
        """Copy the member out of the stack, restore its best weights, evaluate, write its files, report."""
        st, rec, s = m.state, m.recipe, self.splits
        m.model.load_state_dict(self.net.member_state(self.row(m)))
        st.model = m.model
        if m.stopper is not None:
            m.stopper.on_fit_end(st)
        m.observer.on_end(st.status, st.step, st.diverged_step)
        test: dict[str, float | None] = {"loss": None, "accuracy": None}
        val: dict[str, float | None] = {"loss": None, "accuracy": None}
        if st.status != "diverged":
            test = dict(evaluate(m.model, s.x_test, s.y_test))
            if len(s.x_val):
                val = dict(evaluate(m.model, s.x_val, s.y_val))
        best = (m.stopper.best_epoch if m.stopper is not None and m.stopper.best_epoch is not None
                      else best_epoch(st.history, rec.early_stopping.monitor))
        run_dir = m.run_dir
        now = time.perf_counter()
        result = RunResult(
            status=st.status, test_accuracy=test["accuracy"], test_loss=test["loss"], best_epoch=best,
            epochs=len(st.history), steps=st.step, wall_seconds=now - self.started,
            run_dir=str(run_dir) if run_dir is not None else None,
            run_id=run_dir.name if run_dir is not None else f"{rec.name}-seed{rec.seed}",
            alarms=core_alarms(rec, s, m.model, [st]), history=st.history,
            diverged_step=st.diverged_step, stop_reason=st.stop_reason,
            val_accuracy=val["accuracy"], val_loss=val["loss"], train_seconds=now - self.train_started,
            num_params=sum(p.numel() for p in m.model.parameters()), data=s.summary(), device=str(self.device),
            recipe=recipe_to_dict(rec))
        if run_dir is not None:
            atomic_write_text(run_dir / RESULT_FILE, json.dumps(result.to_json(), indent=1))
        self.results[m.index] = result
        if self._finish is not None:
            self._finish(m.index, result)


def _continue_rng(device: torch.device) -> torch.Generator:
    """A generator that continues the global RNG of ``device`` from where it is now (after a member's init)."""
    gen = torch.Generator(device=device)
    if device.type == "cuda":
        gen.set_state(torch.cuda.get_rng_state(device))
    elif device.type == "cpu":
        gen.set_state(torch.get_rng_state())
    else:
        gen.manual_seed(int(torch.randint(0, 2**62, ()).item()))
    return gen
