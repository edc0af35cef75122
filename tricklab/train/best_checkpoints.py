"""The best checkpoints of a run by a monitored metric (Lightning's ``ModelCheckpoint(monitor, save_top_k)``).

The run's own checkpoint (``checkpoint.safetensors``) is its latest epoch, for resuming. ``BestCheckpoints``
keeps, beside it in ``RUN_DIR/best/``, the weights of the ``top_k`` epochs with the best value of ``monitor``
(``val_accuracy`` higher, any loss lower: ``tricks.monitor.Monitor``), as plain safetensors state dicts any
PyTorch code loads (``safetensors.torch.load_file``, then ``model.load_state_dict``), and ``best/index.json``,
the kept epochs best first. The weights are those the run evaluates (with weight averaging, the averaged model).
A tie keeps the earlier epoch; a non-finite value (a diverged epoch) is never kept. A resumed run reads the index
and goes on ranking against it. Recipe: ``checkpoint: {monitor: val_accuracy, top_k: 3}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tricklab.fsutil import atomic_write, atomic_write_text
from tricklab.train.events import Callback, TrainState
from tricklab.tricks.monitor import Monitor

BEST_DIR = "best"
INDEX_FILE = "index.json"


class BestCheckpoints(Callback):
    """Keep the ``top_k`` best epochs' weights by ``monitor`` in ``directory`` (see the module docstring)."""

    def __init__(self, directory: str | Path, monitor: str = "val_loss", top_k: int = 1) -> None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.directory = Path(directory)
        self.monitor = Monitor(monitor)
        self.top_k = top_k
        self.kept: list[dict[str, Any]] = []     # best first: {"epoch", "step", "value", "file"}

    def on_fit_begin(self, state: TrainState) -> None:
        index = self.directory / INDEX_FILE
        if index.is_file():   # a resumed run ranks on against what it kept before
            try:
                kept = json.loads(index.read_text(encoding="utf-8")).get("kept", [])
            except (OSError, ValueError, AttributeError):
                kept = []
            self.kept = [k for k in kept if isinstance(k, dict) and (self.directory / str(k.get("file"))).is_file()]

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.epoch_metrics.get(self.monitor.name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        if len(self.kept) == self.top_k and not self.monitor.improved(value, self.kept[-1]["value"]):
            return
        from safetensors.torch import save

        model = state.eval_model or state.model
        weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        name = f"epoch-{state.epoch:04d}-{self.monitor.name}={value:.6g}.safetensors"
        self.directory.mkdir(parents=True, exist_ok=True)
        data = save(_untied(weights), metadata={"epoch": str(state.epoch), "step": str(state.step),
                                                self.monitor.name: repr(float(value))})
        atomic_write(self.directory / name, lambda f: f.write(data))
        entry = {"epoch": state.epoch, "step": state.step, "value": float(value), "file": name}
        # best first; among equal values the earlier epoch first (it was there first)
        ranked = self.kept + [entry]
        ranked.sort(key=lambda k: (-k["value"] if self.monitor.higher_is_better else k["value"], k["epoch"]))
        self.kept, dropped = ranked[:self.top_k], ranked[self.top_k:]
        atomic_write_text(self.directory / INDEX_FILE, json.dumps(
            {"monitor": self.monitor.name, "mode": self.monitor.mode, "top_k": self.top_k, "kept": self.kept},
            indent=1) + "\n")
        for old in dropped:
            (self.directory / old["file"]).unlink(missing_ok=True)


def _untied(weights: dict[str, Any]) -> dict[str, Any]:
    """safetensors refuses tensors that share memory (tied weights): each gets its own copy."""
    seen: set[int] = set()
    out = {}
    for k, v in weights.items():
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone() if ptr in seen else v
        seen.add(ptr)
    return out


def best_weights(run_dir: str | Path) -> dict[str, Any]:
    """The state dict of a run's best kept epoch (``RUN_DIR/best``), for ``model.load_state_dict``."""
    from safetensors.torch import load_file

    directory = Path(run_dir) / BEST_DIR
    index = json.loads((directory / INDEX_FILE).read_text(encoding="utf-8"))
    return load_file(directory / index["kept"][0]["file"])
