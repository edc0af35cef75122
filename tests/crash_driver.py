"""Kill ``tricklab train`` with SIGKILL at chosen points, then resume it; used by tests/test_faults.py.

Run as ``python tests/crash_driver.py PLAN.json``; prints one JSON object. Each ``tricklab train`` runs the CLI's
own ``main()`` in a child forked from this process, which imported tricklab once (a fresh interpreter per kill
would spend seconds importing torch; 20+ kills must fit in a test's time budget). Every child dies by a real
SIGKILL — sent by this parent after a random delay, or by the child to itself at an exact point of training
(a step, or a phase of writing a checkpoint) — so no Python cleanup, ``finally`` block or buffered write runs.

PLAN: {"recipe_argv": [--set ...], "common_argv": [--json, --store, ...], "runs_root": DIR, "baseline_root": DIR,
       "logs": DIR, "points": [POINT, ...]}
POINT: {"kind": "step", "step": N}                         die at the end of optimizer step N
       {"kind": "timer", "delay": S, "step": N}            the parent kills after S seconds (or the child at step N)
       {"kind": "rotated" | "mid_write" | "written", "epoch": E}   die while saving the checkpoint of epoch E:
           rotated   = after checkpoint.pt became checkpoint.prev.pt, before the new file is written
           mid_write = half of the new checkpoint's bytes written (and fsynced) into its temporary file
           written   = the temporary file complete and fsynced, not yet renamed to checkpoint.pt
"""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch._dynamo  # noqa: F401 - imported by the first optimizer otherwise: seconds in every child

from tricklab.cli.main import build_parser, main
from tricklab.train import checkpoint as checkpoint_mod
from tricklab.train import run as _run  # noqa: F401 - import once here, not in every child
from tricklab.train import trainer as trainer_mod
from tricklab.train.checkpoint import LATEST

build_parser()  # imports every command's module


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install(point: dict[str, Any] | None) -> None:
    """Arm the child's own kill point (monkeypatching this disposable process only)."""
    if point is None:
        return
    if "step" in point:
        fire = trainer_mod.Trainer._fire

        def fire_and_maybe_die(self: Any, event: str, state: Any, *args: Any) -> None:
            fire(self, event, state, *args)
            if event == "on_batch_end" and state.step == point["step"]:
                _die()

        trainer_mod.Trainer._fire = fire_and_maybe_die  # type: ignore[method-assign]
        return
    armed = {"on": False}
    save = checkpoint_mod.save_checkpoint
    real_write = checkpoint_mod.atomic_write

    def save_and_arm(directory: Any, payload: dict[str, Any]) -> Any:
        armed["on"] = payload["epoch"] == point["epoch"]
        return save(directory, payload)

    def write_with_fault(path: Any, write: Any) -> None:
        if not armed["on"]:
            return real_write(path, write)
        if point["kind"] == "rotated":
            _die()
        if point["kind"] == "mid_write":
            def half(fh: Any) -> None:
                buf = io.BytesIO()
                write(buf)
                data = buf.getvalue()
                fh.write(data[: len(data) // 2])
                fh.flush()
                os.fsync(fh.fileno())
                _die()
            return real_write(path, half)
        replace = os.replace

        def replace_or_die(src: Any, dst: Any) -> None:  # "written": the rename is the next thing that happens
            if str(dst).endswith(LATEST):
                _die()
            replace(src, dst)

        os.replace = replace_or_die
        return real_write(path, write)

    trainer_mod.save_checkpoint = save_and_arm
    checkpoint_mod.atomic_write = write_with_fault


def _child(argv: list[str], out: Path, point: dict[str, Any] | None) -> None:
    try:
        torch.set_num_threads(1)
        _install(point)
        sys.stdout = open(out, "w")
        sys.stderr = open(f"{out}.err", "w")
        rc = main(argv)
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - never return into the parent's code
        rc = 99
    os._exit(rc)


def _fork(argv: list[str], out: Path, point: dict[str, Any] | None) -> int:
    pid = os.fork()
    if pid == 0:
        _child(argv, out, point)
    return pid


def _last_json(path: Path) -> dict[str, Any]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1])


def _run_dir(root: Path) -> Path | None:
    found = sorted(p.parent for p in root.glob("*/recipe.yaml"))
    return found[0] if found else None


def run(plan: dict[str, Any]) -> dict[str, Any]:
    recipe, common = plan["recipe_argv"], plan["common_argv"]
    root, logs = Path(plan["runs_root"]), Path(plan["logs"])
    logs.mkdir(parents=True, exist_ok=True)

    def train_args(run_dir: Path | None, runs_root: str) -> list[str]:
        if run_dir is None:  # nothing to resume yet (killed before the recipe was saved): start afresh
            return ["train", *recipe, *common, "--runs-dir", runs_root]
        return ["train", "--resume", str(run_dir), *common]

    started = time.perf_counter()
    pid = _fork(["train", *recipe, "--json", "--quiet", "--store", "none", "--runs-dir", plan["baseline_root"]],
                logs / "baseline.out", None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, (logs / "baseline.out.err").read_text()
    baseline = _last_json(logs / "baseline.out")

    kills = []
    for i, point in enumerate(plan["points"]):
        run_dir = _run_dir(root)
        pid = _fork(train_args(run_dir, str(root)), logs / f"kill-{i:02d}.out", point)
        by, (done, status) = "self", (0, 0)
        if point["kind"] == "timer":
            deadline = time.monotonic() + point["delay"]
            while not done and time.monotonic() < deadline:
                time.sleep(0.002)
                done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                os.kill(pid, signal.SIGKILL)
                by = "parent"
        if not done:
            _, status = os.waitpid(pid, 0)
        d = _run_dir(root)
        kills.append({"point": point, "exit": os.waitstatus_to_exitcode(status), "by": by,
                      "resumed": run_dir is not None, "files": sorted(p.name for p in d.iterdir()) if d else []})

    pid = _fork(train_args(_run_dir(root), str(root)), logs / "final.out", None)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return {"baseline": baseline, "final": _last_json(logs / "final.out") if code == 0 else None, "final_exit": code,
            "kills": kills, "run_dir": str(_run_dir(root)), "final_stderr": (logs / "final.out.err").read_text(),
            "seconds": time.perf_counter() - started}


if __name__ == "__main__":
    print(json.dumps(run(json.loads(Path(sys.argv[1]).read_text()))))
