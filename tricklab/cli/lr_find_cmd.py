"""``tricklab lr-find [RECIPE.yaml] [--set key=value ...] [--steps N] [--lr-min X] [--lr-max X] [--out DIR] [--json]``.

The learning-rate range test (Smith 2017; fastai's lr_find) on a recipe: the recipe's model and optimizer train
one batch per step while the learning rate grows from lr-min to lr-max, and the loss curve shows where training
is fastest. Nothing is trained for good. Writes lr_find.png (loss against the learning rate, the suggestion
marked) and lr_find.json, and prints the suggested learning rate; use it with --set optimizer.lr=VALUE, or let every run
find its own with --set optimizer.lr=auto."""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

from tricklab.cli import add_recipe_arguments, plain

EPILOG = """examples:
  tricklab lr-find                                  # the default recipe: MNIST-1D, 4-layer CNN, AdamW
  tricklab lr-find --set model.name=mlp --set optimizer.name=sgd
  tricklab lr-find my-recipe.yaml --steps 200 --out lr-test

With --json the last line of stdout is one JSON object: suggestion, diverged, steps, png, json."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser("lr-find", help="find a learning rate: the range test on a recipe (loss against LR, plot)",
                       description=plain(__doc__), epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_recipe_arguments(p, "optimizer.name=sgd")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="steps of the test (default: 100)")
    p.add_argument("--lr-min", type=float, default=None, metavar="X", help="first learning rate (default: 1e-7)")
    p.add_argument("--lr-max", type=float, default=None, metavar="X", help="last learning rate (default: 10)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="where lr_find.png and lr_find.json go (default: runs/lr-find-NAME-TIME)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on the last line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from tricklab.errors import InputError
    from tricklab.fsutil import require_directory_path, safe_name
    from tricklab.recipe import load_recipe
    from tricklab.train.lr_search import LR_FIND_JSON, LR_FIND_PNG, LR_MAX, LR_MIN, STEPS, find_lr, write_lr_find
    from tricklab.train.run import build_recipe_model, build_recipe_optimizer, named, prepare_data

    steps = STEPS if args.steps is None else args.steps
    lr_min = LR_MIN if args.lr_min is None else args.lr_min
    lr_max = LR_MAX if args.lr_max is None else args.lr_max
    if not 2 <= steps <= 100_000:
        raise InputError("--steps", f"must be an integer from 2 to 100000, got {steps}")
    if not (math.isfinite(lr_min) and math.isfinite(lr_max) and 0 < lr_min < lr_max):
        raise InputError("--lr-min/--lr-max", f"need 0 < lr-min < lr-max (finite), got {lr_min} and {lr_max}")
    recipe = load_recipe(args.recipe, args.overrides)
    recipe = named(recipe, "name" in recipe.model_fields_set)    # lr-find-digits-mlp-..., as runs are named
    out = args.out or f"runs/lr-find-{safe_name(recipe.name, 'name')}-{time.strftime('%Y%m%d-%H%M%S')}"
    require_directory_path(out, "--out", what="a directory for lr_find.png and lr_find.json")
    if recipe.optimizer.lr == "auto":   # any η: the test sets its own
        recipe = recipe.model_copy(update={"optimizer": recipe.optimizer.model_copy(update={"lr": lr_min})})
    result = find_lr(recipe, prepare_data(recipe), build_recipe_model, build_recipe_optimizer, lr_min=lr_min,
                     lr_max=lr_max, num_steps=steps)
    write_lr_find(result, out, title=f"learning-rate range test — {recipe.name} ({recipe.optimizer.name})")
    payload = {"suggestion": result.suggestion, "diverged": result.diverged, "steps": len(result.lrs),
               "png": f"{out}/{LR_FIND_PNG}", "json": f"{out}/{LR_FIND_JSON}"}
    if args.json:
        print(json.dumps(payload))
    else:
        stop = " (stopped early: the loss diverged)" if result.diverged else ""
        print(f"suggested learning rate: {result.suggestion:.3g}  ({payload['steps']} steps from {lr_min:g} to "
              f"{lr_max:g}{stop})\nplot: {payload['png']}\nuse it: tricklab train --set optimizer.lr="
              f"{result.suggestion:.3g}   (or optimizer.lr=auto: each run runs this test first)")
    return 0
