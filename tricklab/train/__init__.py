"""The Trainer (events, checkpoints, progress) and ``train(recipe) -> RunResult``."""

from tricklab.train.events import Callback, TrainState
from tricklab.train.run import RunResult, train
from tricklab.train.trainer import Trainer, evaluate

__all__ = ["Callback", "RunResult", "TrainState", "Trainer", "evaluate", "train"]
