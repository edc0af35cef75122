"""The run report: sections, embedded PNGs, escaping of everything a user controls, damaged and partial runs.

One real run (digits, MLP, 2 epochs) is trained once per session; each test copies it and writes the doctor's
files (``probes.jsonl``, ``alarms.json``) from the ``tricklab.diagnose.records`` dataclasses, as the doctor does.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import math
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from tricklab.diagnose.records import Alarm, LayerStats, ProbeRecord
from tricklab.errors import InputError
from tricklab.report import build_run_report, write_run_report

XSS_NAME = "<script>alert(1)<!--"   # a run name cannot hold "/" (it names a directory)
XSS_MESSAGE = "dead units in <img src=x onerror=alert(1)> since step 12"
XSS_LAYER = '"><svg onload=alert(1)>.weights'
MLP_LAYERS = ["body.layer1.weights", "body.layer2.weights", "body.layer3.weights", "body.layer4.weights", "out"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTIONS = ("summary", "curves", "gradients", "activations", "updates", "alarms", "recipe", "environment")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real run directory of a recipe whose name is an HTML injection attempt."""
    from tricklab.train import train

    root = tmp_path_factory.mktemp("runs")
    result = train(None, overrides=["data.name=digits", "model.name=mlp", "epochs=2", f"name={XSS_NAME}"],
                   runs_root=root)
    return Path(result.run_dir)


@pytest.fixture
def run_dir(trained_run, tmp_path) -> Path:
    """A private copy of the trained run (tests add and break files in it)."""
    target = tmp_path / trained_run.name
    shutil.copytree(trained_run, target, ignore=shutil.ignore_patterns("checkpoint*.safetensors"))
    return target


def layer_stats(name: str, depth: int, step: int, last: bool, **override: float | None) -> LayerStats:
    """Plausible per-layer numbers: gradients shrinking towards the input, a ReLU layer dying slowly."""
    stats = LayerStats(
        name=name, kind="linear", depth_index=depth, activation=None if last else "relu",
        pre_mean=0.01, pre_std=1.0 / (depth + 1), act_mean=None if last else 0.3,
        act_std=None if last else 0.6 * 0.7 ** depth, frac_saturated=None,
        frac_dead=None if last else min(1.0, 0.01 * depth * step / 4), grad_norm=10 ** (-0.8 * depth) * (1 + step / 40),
        weight_norm=5.0, update_ratio=10 ** (-3 + 0.4 * depth - 0.01 * step))
    for key, value in override.items():
        setattr(stats, key, value)
    return stats


def write_probes(run: Path, layers: list[str] = MLP_LAYERS, steps: range = range(0, 42, 2),
                 special: dict[tuple[int, str], dict[str, float | None]] | None = None) -> list[ProbeRecord]:
    """``probes.jsonl`` as the doctor writes it; ``special[(step, layer)]`` overrides single values."""
    special = special or {}
    records = []
    for step in steps:
        ls = [layer_stats(name, d, step, d == len(layers) - 1, **special.get((step, name), {}))
              for d, name in enumerate(layers)]
        records.append(ProbeRecord(step=step, epoch=step // 21, loss=2.3 * math.exp(-step / 15), grad_norm=1.0,
                                   input_mean=0.0, input_std=1.0, input_absmax=3.0, layers=ls, clip_fired=False,
                                   lr=0.003))
    with open(run / "probes.jsonl", "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record.to_dict()) + "\n")
    return records


def write_alarms(run: Path, message: str = XSS_MESSAGE) -> list[Alarm]:
    alarms = [
        Alarm("dead_units", 12, message, layer="body.layer4.weights", layers=["body.layer4.weights"],
              evidence={"frac_dead": 0.4}, advice=["leaky_relu activation", "lower the learning rate"]),
        Alarm("vanishing_gradients", 20, "gradient norm falls 1000x from the last layer to the first",
              layer="body.layer1.weights", evidence={"ratio": 1e-3}, advice=["he init", "batch norm"]),
    ]
    (run / "alarms.json").write_text(json.dumps([a.to_dict() for a in alarms]), encoding="utf-8")
    return alarms


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text of <section id=...> headings."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(page)
    parser.close()
    return parser


def section_html(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.S)
    assert match, f"section {anchor} missing"
    return match.group(1)


def pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b64) for b64 in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def assert_valid_png(data: bytes) -> None:
    from PIL import Image

    assert data[:8] == PNG_SIGNATURE
    assert len(data) > 1024
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
    with Image.open(io.BytesIO(data)) as im:
        width, height = im.size
        assert width >= 600 and height >= 200
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 10, "an empty figure"


def test_every_section_and_the_summary_numbers(run_dir):
    page = build_run_report(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    for anchor in SECTIONS:
        section_html(page, anchor)
        assert f'href="#{anchor}"' in page
    summary = section_html(page, "summary")
    for value in (f"{result['test_accuracy']:.4f}", f"{result['test_loss']:.4f}", result["run_id"],
                  f"{result['num_params']:,}", "digits", "completed"):
        assert str(value) in summary
    assert "optimizer:" in section_html(page, "recipe") and "adamw" in section_html(page, "recipe")
    env = section_html(page, "environment")
    assert "torch" in env and "python" in env and "report made" in env


def test_without_probes_the_doctor_sections_say_not_recorded(run_dir):
    page = build_run_report(run_dir)
    for anchor in ("gradients", "activations", "updates"):
        body = section_html(page, anchor)
        assert "not recorded" in body and "<img" not in body
    images = pngs(page)
    assert len(images) == 2  # learning curves, and the loss/alarm timeline (the core's capacity alarm)
    for png in images:
        assert_valid_png(png)


def test_a_quoted_command_is_set_as_code_not_shown_with_backticks(run_dir):
    body = section_html(build_run_report(run_dir), "gradients")
    assert "run it with <code>tricklab doctor</code>" in body and "`" not in body


def test_code_spans_are_made_after_escaping():
    from tricklab.report.html import note, paragraph

    assert paragraph("try `a <b>&` now") == "<p>try <code>a &lt;b&gt;&amp;</code> now</p>"
    assert note("``literal`` stays") == '<div class="note">``literal`` stays</div>'


def test_with_probes_every_view_is_a_valid_png(run_dir):
    write_probes(run_dir)
    write_alarms(run_dir)
    page = build_run_report(run_dir)
    for anchor in ("curves", "gradients", "updates", "alarms"):
        assert len(pngs(section_html(page, anchor))) == 1, anchor
    assert len(pngs(section_html(page, "activations"))) == 2  # std + dead units (no tanh/sigmoid: no saturation)
    assert "saturated activations per layer: not recorded" in section_html(page, "activations")
    for png in pngs(page):
        assert_valid_png(png)
    alarms = section_html(page, "alarms")
    for text in ("dead_units", "vanishing_gradients", "too_many_parameters", "leaky_relu activation",
                 "frac_dead = 0.4", "body.layer4.weights"):
        assert text in alarms
    assert 'href="#alarms">Alarms (3)<' in page


def test_user_controlled_text_is_escaped(run_dir):
    write_probes(run_dir, layers=[XSS_LAYER, *MLP_LAYERS[1:]])
    write_alarms(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    result["data"]["classes"] = ["cat", "<b onmouseover=alert(1)>dog</b>"]
    (run_dir / "result.json").write_text(json.dumps(result))
    page = build_run_report(run_dir)

    assert "&lt;script&gt;alert(1)&lt;!--" in page                        # run name (title, summary, recipe)
    assert "&lt;img src=x onerror=alert(1)&gt;" in page                     # alarm message
    assert "&lt;b onmouseover=alert(1)&gt;dog&lt;/b&gt;" in page            # class name
    assert "<script" not in page.lower() and "<svg" not in page.lower() and "<b " not in page
    tags = parse(page).tags
    allowed = {"html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "h3", "p", "nav", "a", "main",
               "section", "div", "table", "thead", "tbody", "tr", "th", "td", "img", "span", "pre", "ul", "li", "code"}
    assert {t for t, _ in tags} <= allowed
    for name, attrs in tags:
        assert not any(a.startswith("on") for a in attrs), (name, attrs)
        if name == "img":
            assert set(attrs) == {"src", "alt"} and attrs["src"].startswith("data:image/png;base64,")


def test_the_page_needs_no_network(run_dir):
    write_probes(run_dir)
    write_alarms(run_dir)
    page = build_run_report(run_dir)
    tags = parse(page).tags
    for name, attrs in tags:
        for key in ("src", "href", "action", "srcset", "poster", "data"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:image/png;base64,", "#")), (name, key, value[:60])
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert "url(" not in style and "@import" not in style
    csp = [a["content"] for t, a in tags if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0] and "script-src" not in csp[0]


def test_non_finite_values_do_not_break_the_plots(run_dir):
    nan, inf = float("nan"), float("inf")
    special = {(4, "body.layer1.weights"): {"grad_norm": nan, "update_ratio": inf},
               (6, "body.layer2.weights"): {"grad_norm": inf, "act_std": nan, "frac_dead": nan},
               (8, "body.layer3.weights"): {"grad_norm": 0.0, "update_ratio": 0.0, "pre_std": -inf},
               (10, "out"): {"grad_norm": None, "update_ratio": None, "pre_std": None}}
    write_probes(run_dir, special=special)
    lines = (run_dir / "probes.jsonl").read_text().splitlines()
    lines[3] = lines[3].replace('"loss": ', '"loss": NaN, "ignored": ', 1)  # json.dumps would write NaN too
    (run_dir / "probes.jsonl").write_text("\n".join(lines) + "\n")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics[0].update(train_loss=None, val_accuracy=None, lr=None)
    metrics[1]["val_loss"] = float("inf")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    page = build_run_report(run_dir)
    assert len(pngs(page)) == 6
    for png in pngs(page):
        assert_valid_png(png)


def test_a_run_still_going_has_no_result_json(run_dir):
    (run_dir / "result.json").unlink()
    write_probes(run_dir)
    page = build_run_report(run_dir)
    assert "result.json is missing" in page
    assert "unknown (no result.json)" in section_html(page, "summary")
    assert len(pngs(section_html(page, "curves"))) == 1
    assert "optimizer:" in section_html(page, "recipe")


def test_result_json_alone_is_enough(run_dir):
    (run_dir / "metrics.json").unlink()
    (run_dir / "recipe.yaml").unlink()
    page = build_run_report(run_dir)
    assert len(pngs(section_html(page, "curves"))) == 1  # drawn from result.json's history
    assert "adamw" in section_html(page, "recipe")         # dumped from result.json's recipe


def test_damaged_files_become_notes(run_dir):
    write_probes(run_dir)
    with open(run_dir / "probes.jsonl", "a", encoding="utf-8") as fh:
        fh.write('{"step": 44, "layers": [{"na')                      # a run killed mid-write
    (run_dir / "alarms.json").write_text("{not json")
    page = build_run_report(run_dir)
    assert "probes.jsonl: 1 line(s) were not a probe record" in page
    assert "alarms.json could not be read" in page
    assert len(pngs(section_html(page, "gradients"))) == 1


@pytest.mark.parametrize("breakage", ["empty", "garbage", "missing", "file"])
def test_not_a_run_directory_is_an_input_error(tmp_path, breakage):
    target = tmp_path / "run"
    if breakage == "empty":
        target.mkdir()
    elif breakage == "garbage":
        target.mkdir()
        (target / "result.json").write_text("\x00\x01 not json")
        (target / "metrics.json").write_text('{"a dict": "not a list"}')
    elif breakage == "file":
        target.write_text("x")
    with pytest.raises(InputError) as err:
        build_run_report(target)
    assert err.value.field == "PATH"
    assert str(target) in str(err.value)
    if breakage in ("empty", "garbage"):
        assert "not a tricklab run directory or is damaged" in str(err.value)


def test_write_run_report_default_and_explicit_paths(run_dir, tmp_path):
    written = write_run_report(run_dir)
    assert written == run_dir / "report.html" and written.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    out = tmp_path / "elsewhere" / "r.html"
    assert write_run_report(run_dir, out) == out and out.stat().st_size > 10_000
    assert not list(out.parent.glob(".r.html.*.tmp"))  # the atomic write left no temporary file


def test_layer_names_are_drawn_literally_and_many_layers_render(run_dir):
    layers = ["$\\frac{a$", "_private.0", *[f"blocks.{i}.conv" for i in range(38)]]
    write_probes(run_dir, layers=layers, steps=range(0, 400, 4))
    started = time.perf_counter()
    page = build_run_report(run_dir)
    assert time.perf_counter() - started < 15  # ~2 s on 2 cores; a loose guard against a pathological slowdown
    for png in pngs(page):
        assert_valid_png(png)


def test_no_figure_is_left_open_and_the_backend_is_untouched(run_dir):
    import matplotlib
    import matplotlib.pyplot as plt

    write_probes(run_dir)
    backend, figures = matplotlib.get_backend(), plt.get_fignums()
    build_run_report(run_dir)
    assert plt.get_fignums() == figures and matplotlib.get_backend() == backend


def test_log10_cells_mark_zero_infinity_and_missing():
    from tricklab.report.plots import _log10_cells

    values = np.array([[1e-3, 1e-1, 0.0], [np.inf, np.nan, 10.0]])
    cells, lo, hi, extend = _log10_cells(values)
    assert (lo, hi) == (-3.0, 1.0) and extend == "both"
    np.testing.assert_allclose(cells[0, :2], np.log10([1e-3, 1e-1]))
    assert cells[0, 2] < lo and cells[1, 0] > hi and cells.mask[1, 1] and not cells.mask[1, 2]


def _cli(argv: list[str]) -> int:
    from tricklab.cli import report_cmd

    parser = argparse.ArgumentParser(prog="tricklab")
    report_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_writes_the_report_and_prints_its_path(run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert _cli(["report", str(run_dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out) and out.is_file()
    assert _cli(["report", str(run_dir), "--json"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last) == {"report": str(run_dir / "report.html")}


def test_cli_refuses_a_damaged_store_file_and_a_directory_as_out(run_dir, tmp_path):
    store = tmp_path / "tricklab.sqlite"
    store.write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(InputError, match="tricklab.sqlite"):   # a file is a store (tests/test_study_report.py)
        _cli(["report", str(store)])
    with pytest.raises(InputError) as err:
        _cli(["report", str(run_dir), "--out", str(tmp_path)])
    assert err.value.field == "--out"


def _registered() -> bool:
    from tricklab.cli.main import build_parser

    return "report" in build_parser().format_help()


@pytest.mark.skipif(not _registered(), reason="report_cmd is not registered in tricklab/cli/main.py yet")
def test_main_report_exit_codes(run_dir, tmp_path):
    from tricklab.cli.main import main

    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0 and out.is_file()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_forest_panels_give_each_unit_its_own_axis():
    """Accuracy points and step counts on separate panels: the figure grows by a panel per unit, empty panels
    are dropped, and with no rows at all there is no figure."""
    import base64

    from PIL import Image

    from tricklab.report import plots

    acc = [plots.ForestRow("a", 0.01, -0.01, 0.03), plots.ForestRow("b", -0.02, -0.03, -0.01)]
    steps = [plots.ForestRow("speed", 120.0, 30.0, 200.0)]
    one = base64.b64decode(plots.forest_panels([("accuracy points", acc), ("steps", [])], "checks"))
    two = base64.b64decode(plots.forest_panels([("accuracy points", acc), ("steps", steps)], "checks"))
    for data in (one, two):
        assert_valid_png(data)
    with Image.open(io.BytesIO(one)) as a, Image.open(io.BytesIO(two)) as b:
        assert b.size[1] > a.size[1]
    assert plots.forest_panels([("steps", [])], "checks") is None
