"""The study report and its exports, from a store filled without training (fast).

The store is written the way the study runner writes it (``ensure_study``, ``start_trial``, ``finish_trial``)
with fabricated but realistic ``RunResult`` dicts: 4 arms × 3 seeds of a dropout grid, one diverged trial (no
test metric, NaN-free JSON as ``RunResult.to_json`` writes it) and one failed trial whose error text is an HTML
injection attempt, like the study's name. The numbers of the report are checked against ``study_statistics``.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.test_report import assert_valid_png, parse, pngs, section_html, write_probes
from tricklab.errors import InputError
from tricklab.recipe import recipe_to_dict
from tricklab.report import build_study_report, export_csv, export_markdown, write_study_report
from tricklab.report.export import md_text
from tricklab.report.study_data import fmt_interval, fmt_p, fmt_value, fmt_wilcoxon, load_study_data
from tricklab.store import Store
from tricklab.study import StudySpec, effect_words, load_study, study_from_dict
from tricklab.study.runner import study_statistics

XSS_ERROR = "RuntimeError: boom <img src=x onerror=alert(1)>\n"
XSS_ALARM = "dead units in <b onmouseover=alert(1)>layer</b>"
CAPACITY_ALARM = {"kind": "too_many_parameters", "layer": None, "step": 0,
                  "message": "The model has 12,345 parameters for 1,294 training examples"}   # every run raises it
XSS_NAME = "<script>alert(1)"   # a study name cannot hold "/" (it names a directory): no closing tag
SPEC = {"name": XSS_NAME, "base": {"data": {"name": "digits"}, "model": {"name": "mlp"}}, "overrides": {"epochs": 3},
        "factors": {"model.dropout": [0.0, 0.2, 0.5, 0.8]}, "seeds": 3, "metric": ["test_accuracy", "test_loss"],
        "target": {"metric": "val_accuracy", "value": 0.9}}
BASE, NOISE, HALF, HEAVY = "model.dropout=0.0", "model.dropout=0.2", "model.dropout=0.5", "model.dropout=0.8"
ACCURACY = {BASE: [0.90, 0.92, 0.91], NOISE: [0.905, 0.925, 0.912], HALF: [0.93, None, None],
            HEAVY: [0.80, 0.815, 0.81]}
SECTIONS = ("summary", "differences", "curves", "target", "layers", "alarms", "failures", "trials", "spec",
            "environment")


def fake_result(spec: StudySpec, arm: str, seed: int, accuracy: float | None, run_dir: Path,
                alarms: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """A ``RunResult.to_json()`` of 3 epochs (2 when diverged: the second epoch's losses are non-finite → null)."""
    diverged = accuracy is None
    final = 0.5 if diverged else accuracy
    history = []
    for epoch in (1, 2) if diverged else (1, 2, 3):
        bad = diverged and epoch == 2
        history.append({"epoch": epoch, "step": 20 * epoch, "lr": 0.003, "epoch_seconds": 0.4 + 0.01 * seed,
                        "train_loss": None if bad else 1.2 / epoch + 0.01 * seed,
                        "train_accuracy": None if bad else final - 0.05 * (3 - epoch),
                        "val_loss": None if bad else 1.0 / epoch + 0.02 * seed,
                        "val_accuracy": None if bad else final + 0.02 - 0.06 * (3 - epoch)})
    return {"status": "diverged" if diverged else "completed", "test_accuracy": accuracy,
            "test_loss": None if diverged else round(2.0 - 2.0 * accuracy, 6), "best_epoch": 1 if diverged else 3,
            "epochs": len(history), "steps": 20 * len(history), "wall_seconds": 2.0 + 0.1 * seed,
            "run_dir": str(run_dir), "run_id": f"{arm}-{seed}", "alarms": list(alarms), "history": history,
            "diverged_step": 27 if diverged else None, "stop_reason": "non-finite loss at step 27" if diverged else "",
            "val_accuracy": history[-1]["val_accuracy"], "val_loss": history[-1]["val_loss"],
            "train_seconds": 1.2 + 0.01 * seed, "num_params": 12_345, "data": {"name": "digits"}, "device": "cpu",
            "recipe": recipe_to_dict(spec.trial_recipe(arm, seed))}


def fill_store(path: Path, spec: StudySpec, values: dict[str, list[float | None]], *, failed: set[tuple[str, int]] = (),
               pending: set[tuple[str, int]] = (), stored_spec: dict[str, Any] | None = None) -> None:
    """Write a study as the runner does; ``None`` values are diverged trials, ``failed`` trials raised."""
    root = path.parent / "runs"
    with Store(path) as db:
        db.ensure_study(spec.name, spec.spec_hash(), stored_spec or spec.model_dump(mode="json"), spec.trials(),
                        version="0.1.0", git_rev="abc1234")
        for arm, seed in spec.trials():
            if (arm, seed) in pending:
                continue
            db.start_trial(spec.name, arm, seed, "local")
            if (arm, seed) in failed:
                db.finish_trial(spec.name, arm, seed, status="failed", error=XSS_ERROR + "  frame\n" * 800)
                continue
            run_dir = root / arm / f"seed-{seed}"
            alarms = [CAPACITY_ALARM] + ([{"kind": "dead_units", "layer": "body.layer2.weights", "step": 40,
                                           "message": XSS_ALARM}] if (arm, seed) == (spec.baseline_arm(), 1) else [])
            result = fake_result(spec, arm, seed, values[arm][seed], run_dir, alarms)
            run_id = f"{spec.name}/{arm}/seed-{seed}"
            db.finish_trial(spec.name, arm, seed, status=result["status"], run_id=run_id, run_name=f"{spec.name}/{arm}",
                            recipe=result["recipe"], run_dir=str(run_dir), result=result, alarms=alarms,
                            metrics=[(h["step"], h["epoch"], "val_loss", h["val_loss"]) for h in result["history"]],
                            version="0.1.0", git_rev="abc1234")


def make_study(root: Path) -> tuple[Path, StudySpec]:
    """The dropout study's store in ``root``; the baseline's seed-0 run directory holds the doctor's probes."""
    spec = study_from_dict(SPEC)
    store = root / "tricklab.sqlite"
    fill_store(store, spec, ACCURACY, failed={(HALF, 2)})
    run_dir = root / "runs" / BASE / "seed-0"
    run_dir.mkdir(parents=True)
    result = fake_result(spec, BASE, 0, ACCURACY[BASE][0], run_dir)
    (run_dir / "result.json").write_text(json.dumps(result))
    (run_dir / "metrics.json").write_text(json.dumps(result["history"]))
    write_probes(run_dir)
    return store, spec


@pytest.fixture
def study(tmp_path) -> tuple[Path, StudySpec]:
    """A private store of the dropout study (tests write files beside it and add studies to it)."""
    return make_study(tmp_path)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, StudySpec, str]:
    """The dropout study's store and its report page, built once for the tests that only read them."""
    store, spec = make_study(tmp_path_factory.mktemp("study"))
    return store, spec, build_study_report(store, spec.name)


class _Tables(HTMLParser):
    """Every table as rows of cell texts."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(" ".join(" ".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables(markup: str) -> list[list[list[str]]]:
    parser = _Tables()
    parser.feed(markup)
    return parser.tables


def test_every_section_is_there_and_images_are_valid_pngs(built):
    store, spec, page = built
    for anchor in SECTIONS:
        section_html(page, anchor)
        assert f'href="#{anchor}"' in page
    assert len(pngs(section_html(page, "differences"))) == 2      # one forest plot per metric
    assert len(pngs(section_html(page, "curves"))) == 1
    assert len(pngs(section_html(page, "layers"))) == 4           # gradients, activation std, dead units, ratios
    for png in pngs(page):
        assert_valid_png(png)
    assert "(min–max over seeds" in section_html(page, "curves")
    assert "seed 0" in section_html(page, "layers")


def test_summary_numbers_equal_study_statistics(built):
    store, spec, page = built
    with Store(store) as db:
        stats = study_statistics(spec, db.trials(spec.name))
    summary = section_html(page, "summary")
    found = tables(summary)
    assert len(found) == 2 and "(baseline)" in summary
    for metric, rows in zip(spec.metrics(), found):
        header, body = rows[0], rows[1:]
        assert header[:3] == ["arm", "n", "mean ± std"] and header[-1] == "effect"
        assert [r[0] for r in body] == [f"{BASE} (baseline)", NOISE, HALF, HEAVY]
        for arm, row in zip(spec.arm_names(), body):
            s = stats[metric].summaries[arm]
            assert row[2] == fmt_value(s.mean) + (f" ± {fmt_value(s.std)}" if s.std is not None else "")
            assert row[3] == (f"t {fmt_interval(s.ci_low, s.ci_high)} bootstrap {fmt_interval(s.boot_low, s.boot_high)}"
                              if s.n >= 2 else "—")
            assert row[4] == f"{fmt_value(s.min)} – {fmt_value(s.max)}"
            if arm == spec.baseline_arm():
                assert row[5] == row[-1] == "baseline"
                continue
            d = stats[metric].differences[arm]
            if d.n >= 2:
                assert row[5] == (f"{fmt_value(d.mean_diff)} t {fmt_interval(d.ci_low, d.ci_high)} "
                                  f"bootstrap {fmt_interval(d.boot_low, d.boot_high)}")
            assert row[6:9] == [fmt_p(d.p_t), fmt_wilcoxon(d.p_wilcoxon, d.p_wilcoxon_floor), fmt_p(d.p_holm)]
            assert (row[7] == "—") == (d.p_wilcoxon is None)   # every p the test can give is shown
            assert row[-1].startswith(effect_words(d))
    # a reference the formatting cannot hide: the baseline's accuracies 0.90, 0.92, 0.91
    assert tables(summary)[0][1][2] == "0.91 ± 0.01"
    rows = {r[0]: r for r in tables(summary)[0][1:]}
    assert rows[NOISE][-1] == "no detectable effect"
    assert rows[HEAVY][-1].startswith("lower by 0.102 (95% CI")
    assert rows[HEAVY][5].startswith("-0.1017 t [-0.1088, -0.0945]")   # mean −0.10167 ± t₀.₉₇₅,₂ · 0.002887/√3
    assert rows[HALF][1] == "1 of 3" and rows[HALF][-1].startswith("not enough paired seeds")
    assert "1 diverged" in summary and "1 failed" in summary and "11 of 12 trials finished" in summary
    assert page.count("no detectable effect") >= 2


def test_target_alarms_failures_trials_and_spec(built):
    store, spec, page = built
    target = {r[0]: r for r in tables(section_html(page, "target"))[0][1:]}
    assert target[f"{BASE} (baseline)"][1:4] == ["3 of 3", "60", "1.23"]
    assert target[HEAVY][1:3] == ["0 of 3", "—"] and target[HALF][1] == "1 of 2"
    alarms = tables(section_html(page, "alarms"))[0]
    assert alarms[0] == ["kind", "arm", "seeds", "layer", "step", "message"] and len(alarms) == 6
    assert ["too_many_parameters", BASE, "0, 1, 2", "—", "0", CAPACITY_ALARM["message"]] in alarms
    assert ["too_many_parameters", HALF, "0, 1", "—", "0", CAPACITY_ALARM["message"]] in alarms  # seed 2 failed
    assert ["dead_units", BASE, "1", "body.layer2.weights", "40", XSS_ALARM] in alarms
    assert "12 alarm(s) — dead_units: 1 trial(s); too_many_parameters: 11 trial(s)." in section_html(page, "alarms")
    failures = section_html(page, "failures")
    assert "characters left out" in failures and "RuntimeError: boom" in failures
    trials = tables(section_html(page, "trials"))[0]
    assert len(trials) == 13 and trials[0][:4] == ["arm", "seed", "status", "attempts"]
    statuses = [r[2] for r in trials[1:]]
    assert statuses.count("diverged") == 1 and statuses.count("failed") == 1
    assert "model.dropout:" in section_html(page, "spec") and "digits" in section_html(page, "spec")
    env = section_html(page, "environment")
    assert "abc1234" in env and "report: torch" in env and "report made" in env


def test_user_controlled_text_is_escaped(built):
    store, spec, page = built
    assert "&lt;script&gt;alert(1)" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;b onmouseover=alert(1)&gt;" in page
    assert "<script" not in page.lower() and "<img src=x" not in page and "<b " not in page
    allowed = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "nav", "a", "main",
               "section", "div", "table", "thead", "tbody", "tr", "th", "td", "img", "span", "pre", "ul", "li"}
    tags = parse(page).tags
    assert {t for t, _ in tags} <= allowed
    for name, attrs in tags:
        assert not any(a.startswith("on") for a in attrs), (name, attrs)
        for key in ("src", "href"):
            if attrs.get(key) is not None:
                assert attrs[key].startswith(("data:image/png;base64,", "#"))


def test_write_study_report_writes_html_csv_and_markdown(study):
    store, spec = study
    written = write_study_report(store, spec.name)
    assert written == store.parent / "_script_alert_1_-report.html"
    assert written.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    rows = list(csv.DictReader(io.StringIO((store.parent / "_script_alert_1_-trials.csv").read_text())))
    assert len(rows) == 12 and {r["study"] for r in rows} == {XSS_NAME}
    by_trial = {(r["arm"], int(r["seed"])): r for r in rows}
    assert float(by_trial[(HEAVY, 1)]["test_accuracy"]) == 0.815
    assert by_trial[(HALF, 1)]["status"] == "diverged" and by_trial[(HALF, 1)]["test_accuracy"] == ""
    assert by_trial[(HALF, 2)]["error"] == XSS_ERROR.strip()
    markdown = (store.parent / "_script_alert_1_-summary.md").read_text()
    assert "no detectable effect" in markdown and "lower by" in markdown
    assert "&lt;script&gt;" in markdown and "<script" not in markdown
    assert f"| **{md_text(BASE)}** (baseline) |" in markdown
    assert not list(store.parent.glob(".*.tmp"))


def test_export_functions_and_csv_formula_defusing(tmp_path):
    spec = study_from_dict({"name": "=1+1", "base": {"data": {"name": "digits"}}, "seeds": 2,
                            "factors": {"opt": {"=HYPERLINK(1)": {"optimizer.lr": 0.1}, "b": {"optimizer.lr": 0.01}}}})
    store = tmp_path / "s.sqlite"
    fill_store(store, spec, {"=HYPERLINK(1)": [0.5, 0.6], "b": [0.7, 0.75]})
    out = export_csv(store, spec.name, tmp_path / "t.csv")
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert len(rows) == 5 and rows[1][:2] == ["'=1+1", "'=HYPERLINK(1)"]
    md = export_markdown(store, spec.name, tmp_path / "s.md").read_text()
    assert md.startswith("# Study =1+1") and "| **=HYPERLINK(1)** (baseline) |" in md


def test_an_incomplete_study_says_so(tmp_path):
    spec = study_from_dict(SPEC)
    store = tmp_path / "s.sqlite"
    fill_store(store, spec, ACCURACY, pending={(HEAVY, 2), (NOISE, 2)})
    page = build_study_report(store, spec.name)
    assert "2 trial(s) have not finished" in page and "pending" in section_html(page, "trials")
    assert "no trial of the baseline arm" not in page and "not recorded" in section_html(page, "layers")


def test_a_relative_base_that_is_gone_is_rebuilt_from_the_trials(tmp_path):
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec" / "base.yaml").write_text("data: {name: digits}\nmodel: {name: mlp}\nepochs: 3\n")
    (tmp_path / "spec" / "study.yaml").write_text("name: gone\nbase: base.yaml\nfactors: {model.dropout: [0.0, 0.5]}\n"
                                                  "seeds: 2\nbaseline: {model.dropout: 0.5}\n")
    spec = load_study(tmp_path / "spec" / "study.yaml")
    store = tmp_path / "store" / "s.sqlite"
    fill_store(store, spec, {"model.dropout=0.0": [0.8, 0.82], "model.dropout=0.5": [0.85, 0.86]})
    (tmp_path / "spec" / "base.yaml").unlink()
    data = load_study_data(store, "gone")
    assert data.spec is not None and data.shape.baseline == "model.dropout=0.5"
    assert "rebuilt on the recipe a trial ran" in data.notes[0]
    with Store(store) as db:
        expected = study_statistics(spec, db.trials("gone"))
    assert data.stats["test_accuracy"].to_dict() == expected["test_accuracy"].to_dict()


def test_an_unreadable_spec_falls_back_to_the_trials(tmp_path):
    spec = study_from_dict(SPEC)
    store = tmp_path / "s.sqlite"
    fill_store(store, spec, ACCURACY, stored_spec={"name": spec.name, "factors": "damaged", "baseline": NOISE})
    page = build_study_report(store, spec.name)
    assert "could not be rebuilt" in page and "damaged" in section_html(page, "spec")
    body = tables(section_html(page, "summary"))[0][1:]
    assert sorted(r[0] for r in body) == sorted([BASE, f"{NOISE} (baseline)", HALF, HEAVY])


def test_a_relative_run_dir_is_found_from_another_working_directory(tmp_path, monkeypatch):
    from tricklab.report.study_report import locate_run_dir

    store = tmp_path / "st" / "tricklab.sqlite"
    run = tmp_path / "st" / "runs" / "study" / "arm" / "seed-0"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate_run_dir("st/runs/study/arm/seed-0", store) == Path("st/runs/study/arm/seed-0")  # as recorded
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert locate_run_dir("st/runs/study/arm/seed-0", store) == run
    assert locate_run_dir(str(run), store) == run
    assert locate_run_dir("gone/seed-9", store) == Path("gone/seed-9")


def _cli(argv: list[str]) -> int:
    from tricklab.cli import report_cmd

    parser = argparse.ArgumentParser(prog="tricklab")
    report_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_reports_the_only_study_of_a_store(study, capsys):
    from tricklab.cli.main import main

    store, _ = study
    assert main(["report", str(store)]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == store.parent / "_script_alert_1_-report.html" and written.is_file()
    out = store.parent / "elsewhere" / "r.html"
    assert main(["report", str(store), "--out", str(out)]) == 2   # a typo in a directory is not made into one
    assert "elsewhere" in capsys.readouterr().err and not out.parent.exists()
    out.parent.mkdir()
    assert main(["report", str(store), "--study", XSS_NAME, "--out", str(out), "--json"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["report"] == str(out) and last["study"] == XSS_NAME and Path(last["csv"]).is_file()
    assert Path(last["summary"]).parent == out.parent


def test_cli_errors_exit_2_and_name_the_problem(study, tmp_path, capsys):
    from tricklab.cli.main import main

    store, spec = study
    other = study_from_dict({**SPEC, "name": "second"})
    fill_store(store, other, ACCURACY)
    with pytest.raises(InputError) as err:
        _cli(["report", str(store)])
    assert err.value.field == "--study" and XSS_NAME in err.value.allowed and "second" in err.value.allowed
    assert main(["report", str(store)]) == 2
    assert main(["report", str(store), "--study", "nope"]) == 2
    assert "'nope' is not a study" in capsys.readouterr().err
    assert main(["report", str(store), "--study", "second"]) == 0

    empty = tmp_path / "empty.sqlite"
    Store(empty).close()
    with pytest.raises(InputError) as err:
        _cli(["report", str(empty)])
    assert err.value.field == "PATH" and "holds no study" in str(err.value)
    assert main(["report", str(empty)]) == 2

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError) as err:
        _cli(["report", str(garbage)])
    assert "garbage.sqlite" in str(err.value)
    assert main(["report", str(garbage)]) == 2

    foreign = tmp_path / "foreign.sqlite"
    import sqlite3

    db = sqlite3.connect(foreign)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    before = foreign.read_bytes()
    assert main(["report", str(foreign)]) == 2
    assert foreign.read_bytes() == before          # a SQLite file that is not a store is not written to
    assert main(["report", str(tmp_path), "--study", "x"]) == 2
    assert re.search(r"--study: .* is not a store file", capsys.readouterr().err)
