"""Population training: many small models of one architecture trained together, as one stacked model.

An ablation of small models is a few thousand tiny steps per run, dominated by per-step overhead (Python,
kernel launches, small matrix products that leave the vector units idle). ``train_population`` trains K
recipes that share data, architecture and batch size in one loop: one gather of K batches, one forward and
one backward pass of the stacked model (``tricklab.population.stacked``), per-member clipping and one optimizer
update (``tricklab.population.stacked_optim``).

The loop is the Trainer's own: ``tricklab.train.loop`` (data order, learning rates, the device-side loss,
accuracy and divergence sums and their checks, the epoch's metrics, validation, the callbacks' events, leaving)
drives ``_Population``, its learner for K stacked rows, exactly as it drives the ``Trainer`` for one model. Each
member has the callbacks a trial's Trainer has (its observer where the doctor sits, early stopping, the plateau
schedule, its metrics file), and its ``RunResult`` is assembled by ``tricklab.train.run.finish_run``, as a
trial's is.

What each member keeps as its own, exactly as if it were trained alone by ``tricklab.train.train``:

- its initial weights (``build_recipe_model`` with its seed: the same RNG draws, any init scheme) and its
  dropout masks (a generator that continues the global RNG where its init left it; on CUDA the Trainer's fused
  dropout kernel draws differently, so masks are only equal in distribution there);
- its data order (``loop.epoch_order(seed, epoch)``, the loop's ``batches_per_epoch`` slicing);
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
against ``conv1d``, batched matrix products against single ones (their sums are associated in another order),
torch's fused AdamW kernel against its single-tensor loop — and batch norm with Adam-type updates amplifies the
one-ulp differences chaotically over hundreds of steps, as it does the Trainer's own between 1 and 2 torch
threads (~4e-3 after 50 steps): such a member is an equally valid sample, not a bit-identical copy.
``fused=False`` runs the single-tensor loop. Measured on a study of 2 arms × 2 seeds of an MLP and of a CNN
(MNIST-1D, 4 epochs, 2 torch threads, tests/test_population_parity.py): under ``--executor population`` each
trial's first-epoch training loss is 0 to 4.5e-7 (relative) from what ``--executor local`` gives it, its last
epoch's 1e-9 to 6.2e-5, its test loss 2e-7 to 1.9e-4, and its test accuracy equal or one test example of 1000
(0.1 point) away. A member whose loss turns non-finite is detected at the Trainer's cadence (every ``check_every`` steps and at the end of an epoch), marked diverged and
dropped; the others are unaffected (no operation mixes members).

Which recipes: ``tricklab.population.support`` lists the recipe keys a population honours, per member or shared
(an allow-list); a recipe that sets any other key is trained on its own by the population executor (today: user
models, weight averaging and ensembles, weight normalisation, resnet and inception). Members write no
checkpoints: a population interrupted mid-way is retrained from the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tricklab.data import Splits
from tricklab.population.probe import MemberProbe, PopulationProbe, layer_kinds
from tricklab.population.stacked import StackedNet
from tricklab.population.stacked_optim import StackedOptimizer, clip_, member_grad_norms
from tricklab.population.support import population_key, population_unsupported
from tricklab.recipe import Recipe, save_recipe
from tricklab.train import loop
from tricklab.train.callbacks import EarlyStoppingCallback
from tricklab.train.events import Callback, TrainState
from tricklab.train.memory import retain_freed_memory
from tricklab.train.run import (
    METRICS_FILE,
    RECIPE_FILE,
    MetricsFile,
    RunResult,
    build_recipe_model,
    final_splits,
    finish_run,
    prepare_data,
    recipe_schedule,
    select_device,
    stopping_callbacks,
)
from tricklab.train.trainer import EVAL_BATCH, training_subset
from tricklab.tricks.clipping import CLIPPERS, ClipTally


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
    population = _Population(members, splits, probe_every, check_every, fused, on_done)
    loop.fit(population)
    return [population.results[m.index] for m in population.members]


def _check_members(members: Sequence[PopulationMember]) -> None:
    if not members:
        raise ValueError("a population needs at least one member")
    if len({population_key(m.recipe) for m in members}) > 1:
        raise ValueError("the members differ in what a population shares (data, architecture, batch size, ...)")
    for m in members:
        key = population_unsupported(m.recipe)
        if key is not None:
            raise ValueError(f"{key} is not trained in a population (tricklab.population.support)")


@dataclass
class _Member:
    """A member while it trains: its own module (its weights live in the stack until it leaves), its state and
    callbacks (the loop's row), its schedule and its latest training-subset evaluation (for the observer)."""

    index: int
    recipe: Recipe
    run_dir: Path | None
    observer: MemberObserver
    model: nn.Module
    state: TrainState
    schedule: Callable[[int], float]
    stopper: EarlyStoppingCallback | None
    callbacks: list[Callback] = field(default_factory=list)
    train_eval: dict[str, float] | None = None


class _Population:
    """The loop's learner (``tricklab.train.loop.Learner``) for K members stacked into one model: row r of
    every stacked tensor is ``self.active[r]``."""

    def __init__(self, members: Sequence[PopulationMember], splits: Splits | None, probe_every: int | None,
                 check_every: int, fused: bool, on_done: Callable[[int, RunResult], None] | None) -> None:
        _check_members(members)
        self.started = time.perf_counter()
        retain_freed_memory()
        ref = members[0].recipe
        self.device = select_device(ref.device)
        self.splits = splits if splits is not None else prepare_data(ref, self.device)
        self.x_train, self.y_train = self.splits.x_train, self.splits.y_train
        self.n = len(self.x_train)
        self.batch_size = min(ref.data.batch_size, self.n)
        self.steps_per_epoch = loop.batches_per_epoch(self.n, self.batch_size)
        self.probe_every = probe_every
        self.check_every = max(1, check_every)
        self.on_done = on_done
        self.results: dict[int, RunResult] = {}
        models, generators = [], []
        for pm in members:
            models.append(build_recipe_model(pm.recipe, self.splits, pm.recipe.seed))
            generators.append(_continue_rng(self.device))
        self.members = [self._member(i, pm, model) for i, (pm, model) in enumerate(zip(members, models))]
        self.template = models[max(range(len(models)), key=lambda i: members[i].recipe.model.dropout)]
        self.net = StackedNet(self.template, models, self.splits.input_shape,
                              [m.recipe.model.dropout for m in members], generators)
        self.kinds = layer_kinds(self.template)
        o = [m.recipe.optimizer for m in members]
        self.optimizer = StackedOptimizer(ref.optimizer.name, list(self.net.params.values()),
                                          [n in self.net.decayed for n in self.net.params],
                                          weight_decay=[x.weight_decay for x in o],
                                          decoupled=[x.decay == "decoupled" for x in o],
                                          momentum=[x.momentum for x in o], betas=[tuple(x.betas) for x in o],
                                          eps=[x.eps for x in o], fused=fused)
        self.clipping = _StackedClipping([m.recipe for m in members], self.device)
        self.active = list(self.members)
        self.rows = [m.state for m in self.active]
        self.leaving: list[_Member] = []   # their callbacks have ended; reported when the loop lets them go
        for m in self.members:
            m.state.model = _RowView(self, m)  # type: ignore[assignment]
        self.train_started = time.perf_counter()

    def _member(self, i: int, pm: PopulationMember, model: nn.Module) -> _Member:
        """Member i as ``tricklab.train.run`` would set it up alone: schedule, early stopping, plateau, files."""
        rec = pm.recipe
        run_dir = Path(pm.run_dir) if pm.run_dir is not None else None
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            save_recipe(rec, run_dir / RECIPE_FILE)
        schedule = recipe_schedule(rec, self.n)
        table = [schedule(t) for t in range(rec.epochs * self.steps_per_epoch)]   # a list index per step
        stopper, plateau = stopping_callbacks(rec)
        state = TrainState(None, model, None, steps_per_epoch=self.steps_per_epoch)  # type: ignore[arg-type]
        observer = pm.observer or MemberObserver()
        observer.on_start(sum(p.numel() for p in model.parameters()), self.n)
        m = _Member(i, rec, run_dir, observer, model, state, table.__getitem__, stopper)
        # in the order ``tricklab.train.run`` gives a trial's Trainer: the doctor, clipping, early stopping, the
        # plateau schedule, the metrics file — between taking the member out of the stack and reporting it
        m.callbacks = [_Unstack(self, m), _Observe(m), _ClipReport(self, m), *(c for c in (stopper, plateau) if c),
                       *([MetricsFile(run_dir / METRICS_FILE)] if run_dir is not None else []), _Report(self, m)]
        return m

    def row(self, member: _Member) -> int:
        return self.active.index(member)

    # -- the learner -------------------------------------------------------------------------------------------
    def data_seeds(self) -> list[int]:
        return [m.recipe.seed for m in self.active]

    def epochs_of(self, row: int) -> int:
        return self.active[row].recipe.epochs

    def callbacks_of(self, row: int) -> Sequence[Callback]:
        return self.active[row].callbacks

    def begin_epoch(self) -> None:
        self.clipping.begin_epoch()
        for m in self.active:
            m.train_eval = None

    def train_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One step of every member: per-member η, one stacked forward/backward, per-member clipping and
        update; a probe step measures every member (``population_probe``) and hands each its record."""
        net, K = self.net, len(self.active)
        step = self.rows[0].step
        lrs = [loop.scheduled_lr(m.schedule, m.state) for m in self.active]
        for state, lr in zip(self.rows, lrs):
            state.lr = lr
        probe = PopulationProbe(net, self.kinds) if self.probe_every and step % self.probe_every == 0 else None
        logits = net.forward(x, training=True, tape=probe.begin() if probe else None)
        losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                 reduction="none").view(K, -1).mean(dim=1)
        net.zero_grad()
        losses.sum().backward()
        grads = [p.grad for p in net.params.values()]
        norms = member_grad_norms(grads)
        if probe:
            probe.after_backward()
        self.clipping.clip_(grads, norms, net)
        self.optimizer.step(lrs)
        losses = losses.detach()
        if probe:
            records = probe.after_step(step=step, epochs=[s.epoch for s in self.rows], x=x, losses=losses,
                                       grad_norms=norms, lrs=lrs)
            for m, record in zip(self.active, records):
                m.observer.on_probe(record)
        return losses, logits.detach()

    def end_step(self) -> None:
        """Nothing: a population has no batch callbacks (its probes are handed over in ``train_step``)."""

    def validate(self) -> list[dict[str, float] | None]:
        """The validation split of every member at once (stacked, eval mode); the training subset too when an
        observer evaluates it (the doctor's like-for-like overfitting input)."""
        s = self.splits
        val = self._evaluate_split(s.x_val, s.y_val)
        if val is None:
            return [None] * len(self.active)
        if any(getattr(m.observer, "evaluates_training_split", False) for m in self.active):
            idx = training_subset(self.n, len(s.x_val), self.device)
            for m, metrics in zip(self.active, self._evaluate_split(s.x_train[idx], s.y_train[idx]) or []):
                m.train_eval = metrics
        return list(val)

    def end_epoch(self) -> None:
        """Nothing: members write no checkpoints (an interrupted population is trained again)."""

    def keep(self, rows: list[int]) -> None:
        self._report_leaving()
        if len(rows) == len(self.active):
            return
        self.active = [self.active[r] for r in rows]
        self.rows = [m.state for m in self.active]
        if rows:
            self.net.keep(rows)
            self.optimizer.keep(rows, list(self.net.params.values()))
            self.clipping.keep(rows)

    # -- evaluation and results --------------------------------------------------------------------------------
    @torch.no_grad()
    def _evaluate_split(self, x: Tensor, y: Tensor, net: StackedNet | None = None) -> list[dict[str, float]] | None:
        """Every member's mean loss and accuracy on (x, y), in eval mode (stacked: ``net``, default the
        population's); None when empty. A batch holds ``EVAL_BATCH`` examples per member up to 4 members, then
        4 × ``EVAL_BATCH`` member-examples (16 CNNs on 3,600 examples, 1 thread: 1.03 s of CPU at 128 examples
        per member, 1.01 s at 256, 1.50 s at 512, 1.97 s at 2048); one member alone evaluates in the Trainer's
        batches."""
        if not len(x):
            return None
        net = self.net if net is None else net
        K = net.K
        batch_size = min(EVAL_BATCH, max(64, 4 * EVAL_BATCH // K))
        loss_sum = torch.zeros(K, dtype=torch.float64, device=x.device)
        correct = torch.zeros(K, dtype=torch.int64, device=x.device)
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            out = net.forward(xb.unsqueeze(0).expand(K, *xb.shape), training=False)
            losses = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.repeat(K), reduction="none").view(K, -1)
            loss_sum += losses.mean(dim=1).double() * len(yb)
            correct += (out.argmax(dim=-1) == yb).sum(dim=1)
        return loop.split_metrics(loss_sum, correct, len(x))

    def _report_leaving(self) -> None:
        """Report the members whose callbacks have ended (``_Report``). Two or more that did not diverge have
        their final splits evaluated together: their own modules as they ended (restored to the best epoch where
        early stopping did so) stacked anew — what ``finish_run`` would evaluate one member at a time, up to the
        stacked kernels' rounding; one member alone is evaluated by ``finish_run`` as a trial's Trainer is."""
        leaving, self.leaving = self.leaving, []
        scored = [m for m in leaving if m.state.status != "diverged"]
        together = self._final_evaluations(scored) if len(scored) > 1 else {}
        for m in leaving:
            self.report(m, together.get(m.index))

    def _final_evaluations(self, members: list[_Member]) -> dict[int, dict[str, dict[str, float] | None]]:
        """Member index → its ``test``, ``val`` and ``train`` metrics, the members stacked in one ``StackedNet``."""
        net = StackedNet(self.template, [m.model for m in members], self.splits.input_shape,
                         [0.0] * len(members), [None] * len(members))
        per_split = {name: self._evaluate_split(x, y, net=net) or [None] * len(members)
                     for name, (x, y) in final_splits(self.splits).items()}
        return {m.index: {name: rows[i] for name, rows in per_split.items()} for i, m in enumerate(members)}

    def report(self, m: _Member, evaluations: dict[str, dict[str, float] | None] | None = None) -> None:
        """The member left and is out of the stack: its result (``finish_run``, as ``train`` assembles one;
        ``evaluations``: its final splits' metrics where they were evaluated with other members')."""
        result = finish_run(m.recipe, self.splits, self.device, [m.state], m.model, stopper=m.stopper,
                            run_dir=m.run_dir, started=self.started,
                            train_seconds=time.perf_counter() - self.train_started, evaluations=evaluations)
        self.results[m.index] = result
        if self.on_done is not None:
            self.on_done(m.index, result)


class _StackedClipping:
    """Per-member clipping of the stacked gradients (one rule for the population, each member's θ; no clipping
    is norm clipping at θ = ∞, a factor of exactly 1) and the epoch's clipping record (``ClipTally``)."""

    def __init__(self, recipes: Sequence[Recipe], device: torch.device) -> None:
        modes = [CLIPPERS.canonical(r.clip.mode) for r in recipes]
        shared = {mode for mode in modes if mode != "none"}
        self.mode = shared.pop() if shared else "none"
        self.threshold = torch.tensor([r.clip.threshold if mode != "none" else float("inf")
                                       for r, mode in zip(recipes, modes)], dtype=torch.float32, device=device)
        self.device = device
        self.begin_epoch()

    def begin_epoch(self) -> None:
        self.tally = ClipTally((len(self.threshold),), self.device)

    def clip_(self, grads: list[Tensor | None], norms: Tensor, net: StackedNet) -> None:
        weights = [p.detach() for p in net.params.values()] if self.mode == "agc" else ()
        self.tally.add(clip_(grads, self.mode, self.threshold, norms, weights), norms)

    def metrics(self, row: int) -> dict[str, float]:
        """Row's share of clipped steps and its gradient norms (before clipping) this epoch, as the Trainer's
        ``GradientClipping`` records them (both through ``tricks.clipping.ClipTally``)."""
        return self.tally.metrics(row)

    def keep(self, rows: list[int]) -> None:
        self.threshold = self.threshold[rows]
        self.tally.keep(rows)


# -- a member's callbacks ----------------------------------------------------------------------------------------
class _RowView:
    """What the early-stopping callback sees as "the model" of a member while it trains: its row."""

    def __init__(self, population: _Population, member: _Member) -> None:
        self.population, self.member = population, member

    def state_dict(self) -> dict[str, Tensor]:
        return self.population.net.member_state(self.population.row(self.member))

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.population.net.load_member_state(self.population.row(self.member), state)


class _Unstack(Callback):
    """First: when the member leaves, its weights are copied out of the stack into its own module, which the
    callbacks after it then see as the model (early stopping restores its best weights there)."""

    def __init__(self, population: _Population, member: _Member) -> None:
        self.population, self.member = population, member

    def on_fit_end(self, state: TrainState) -> None:
        self.member.model.load_state_dict(self.population.net.member_state(self.population.row(self.member)))
        state.model = self.member.model


class _Observe(Callback):
    """The member's observer, where a trial's doctor sits among the Trainer's callbacks (before the tricks)."""

    def __init__(self, member: _Member) -> None:
        self.member = member

    def on_epoch_end(self, state: TrainState) -> None:
        observed = {k: v for k, v in state.epoch_metrics.items() if isinstance(v, (int, float))}
        train_eval = self.member.train_eval
        if train_eval is not None and state.status != "diverged":
            observed.update(train_eval_loss=train_eval["loss"], train_eval_accuracy=train_eval["accuracy"])
        self.member.observer.on_epoch_end(state.epoch, state.step, observed)

    def on_fit_end(self, state: TrainState) -> None:
        self.member.observer.on_end(state.status, state.step, state.diverged_step)


class _ClipReport(Callback):
    """The member's clipping statistics of the epoch (``GradientClipping``'s metrics)."""

    def __init__(self, population: _Population, member: _Member) -> None:
        self.population, self.member = population, member

    def on_epoch_end(self, state: TrainState) -> None:
        state.epoch_metrics.update(self.population.clipping.metrics(self.population.row(self.member)))


class _Report(Callback):
    """Last: the member leaves (restored, out of the stack); its result is assembled and reported once the loop
    lets it go (``_Population.keep``), with the other members leaving at that moment."""

    def __init__(self, population: _Population, member: _Member) -> None:
        self.population, self.member = population, member

    def on_fit_end(self, state: TrainState) -> None:
        self.population.leaving.append(self.member)


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
