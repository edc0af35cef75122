"""``metrics.csv``: a run's history as a table any spreadsheet opens, beside ``metrics.json``."""

from __future__ import annotations

import csv
import io
import json
import math

from tricklab.train.rows import history_csv


def test_history_csv_keeps_every_value_and_every_late_column():
    history = [{"epoch": 1, "step": 50, "train_loss": 0.123456789012345, "val_loss": float("nan")},
               {"epoch": 2, "step": 100, "train_loss": 0.1, "val_loss": 0.2, "swa_val_accuracy": 0.9,
                "note": 'a "quoted", text'}]
    rows = list(csv.reader(io.StringIO(history_csv(history))))
    assert rows[0] == ["epoch", "step", "train_loss", "val_loss", "swa_val_accuracy", "note"]
    assert rows[1] == ["1", "50", "0.123456789012345", "", "", ""]        # NaN and a missing key: empty cells
    assert rows[2] == ["2", "100", "0.1", "0.2", "0.9", 'a "quoted", text']
    assert float(rows[1][2]) == history[0]["train_loss"]                    # every digit survives
    assert history_csv([]) == "\n"


def test_a_run_writes_metrics_csv_equal_to_its_json(tmp_path):
    from tricklab.train import train

    result = train(None, overrides=["data.name=synthetic", "model.name=mlp", "model.depth=1", "model.width=8",
                                    "epochs=3"], runs_root=tmp_path / "runs")
    run = tmp_path / "runs" / result.to_json()["run_dir"].split("/")[-1]
    history = json.loads((run / "metrics.json").read_text())
    table = list(csv.DictReader((run / "metrics.csv").open(newline="")))
    assert len(table) == len(history) == 3
    for row, epoch in zip(table, history):
        for key, value in epoch.items():
            if isinstance(value, (int, float)) and value is not None and math.isfinite(value):
                assert float(row[key]) == value, key
