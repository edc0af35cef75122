"""The run report in a real browser (headless Chromium): it renders, every image decodes, the console is silent.

Uses the plain ``chromium`` command line (no Python browser driver): ``--dump-dom`` on a copy of the report with
a small probe script that writes the image check into the DOM, and ``--screenshot`` on the report itself.
With ``--enable-logging=stderr`` Chromium prints every console message as ``...:CONSOLE:N] "text"``; the report
has no script, so any such line (an uncaught error, a Content-Security-Policy refusal of a network request) is
a failure. A control page first proves that this detection sees errors at all.
CI: ``apt-get install -y chromium`` (Debian) provides ``/usr/bin/chromium``.
"""

from __future__ import annotations

import html
import io
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.test_report import run_dir, trained_run, write_alarms, write_probes  # noqa: F401 - fixtures
from tricklab.report import write_run_report
from tricklab.report.html import CSP

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("headless Chromium is not installed (no /usr/bin/chromium and no `chromium` on PATH); "
                "install it with: apt-get install -y chromium", allow_module_level=True)

CONSOLE = re.compile(r":CONSOLE(?::\d+|\(\d+\))\]\s*(.*)")
IMAGE_PROBE = ("<script>window.addEventListener('load', () => { const imgs = [...document.images]; "
               "document.body.setAttribute('data-imgs', imgs.length); "
               "document.body.setAttribute('data-imgs-ok', imgs.filter(i => i.complete && i.naturalWidth > 0)"
               ".length); });</script>")


def chromium(tmp_path: Path, page: Path, *mode: str, width: int = 1200, height: int = 2000) -> tuple[str, str]:
    """Run headless Chromium on ``page`` with ``mode`` flags; return (stdout, stderr)."""
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           f"--window-size={width},{height}", "--virtual-time-budget=5000", *mode, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, done.stderr


def console_messages(stderr: str) -> list[str]:
    return [m.group(1) for line in stderr.splitlines() if (m := CONSOLE.search(line))]


def test_the_console_check_sees_errors_and_blocked_requests(tmp_path):
    control = tmp_path / "control.html"
    policy = CSP.replace("default-src 'none'", "default-src 'none'; script-src 'unsafe-inline'")
    control.write_text(f'<!DOCTYPE html><html><head><meta http-equiv="Content-Security-Policy" content="{policy}">'
                       '</head><body><img src="https://example.invalid/x.png" alt="x">'
                       "<script>undefinedFunction()</script></body></html>")
    _, stderr = chromium(tmp_path, control, "--dump-dom")
    messages = console_messages(stderr)
    assert any("example.invalid" in m and "Content Security Policy" in m for m in messages), stderr[-2000:]
    assert any("Uncaught ReferenceError" in m for m in messages), stderr[-2000:]


def assert_renders(tmp_path: Path, report: Path, images: int, height: int = 2400) -> None:
    """``report`` renders in Chromium with a silent console, ``images`` images that all decode, and a non-blank
    screenshot."""
    page = report.read_text(encoding="utf-8")
    script_csp = f'content="{CSP.replace(chr(39), "&#x27;")}"'
    assert script_csp in page, "the report's Content-Security-Policy meta changed; update this test"
    probe_page = tmp_path / "probe.html"
    relaxed = script_csp.replace("default-src", "script-src &#x27;unsafe-inline&#x27;; default-src")
    probe_page.write_text(page.replace(script_csp, relaxed).replace("</body>", IMAGE_PROBE + "</body>"),
                          encoding="utf-8")
    dom, stderr = chromium(tmp_path, probe_page, "--dump-dom")
    assert console_messages(stderr) == [], console_messages(stderr)
    total = int(re.search(r'data-imgs="(\d+)"', dom).group(1))
    ok = int(re.search(r'data-imgs-ok="(\d+)"', dom).group(1))
    assert total == page.count("<img ") == images and ok == total

    shot = tmp_path / "report.png"
    _, stderr = chromium(tmp_path, report, f"--screenshot={shot}", height=height)
    assert console_messages(stderr) == [], console_messages(stderr)
    from PIL import Image

    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (1200, height)
        assert len(im.convert("RGB").getcolors(maxcolors=1 << 22) or []) > 100, "a blank page"


def test_report_renders_in_chromium(run_dir, tmp_path):  # noqa: F811 - pytest fixture
    write_probes(run_dir)
    write_alarms(run_dir)
    assert_renders(tmp_path, write_run_report(run_dir, tmp_path / "report.html"), images=6)


def test_study_report_renders_in_chromium(tmp_path):
    from tests.test_study_report import make_study
    from tricklab.report import write_study_report

    store, spec = make_study(tmp_path / "study")
    report = write_study_report(store, spec.name)
    assert_renders(tmp_path, report, images=7, height=3000)  # 2 forest plots, curves, 4 per-layer views


# -- the layout at a desktop and a phone width ------------------------------------------------------------------
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-output" / "screenshots"
"""Where the layout tests leave their screenshots (gitignored), for a person to look at after a run."""

WIDTH_PROBE = ("<script>window.addEventListener('load', () => { const f = document.querySelector('iframe'); "
               "const d = f.contentDocument.documentElement; f.style.height = d.scrollHeight + 'px'; "
               "document.body.setAttribute('data-scroll', d.scrollWidth + ' ' + d.clientWidth); });</script>")


def page_widths(tmp_path: Path, report: Path, width: int, shot: Path) -> tuple[int, int]:
    """(scrollWidth, clientWidth) of ``report`` laid out ``width`` CSS pixels wide, and its screenshot in ``shot``.

    Headless Chromium will not open a window narrower than 500 px, so the report is laid out inside an iframe of
    that width (``srcdoc``: same origin, so the probe can read the framed page's widths); the frame takes the
    report's own Content-Security-Policy with it."""
    outer = tmp_path / f"frame-{width}.html"
    outer.write_text(f'<!DOCTYPE html><html><body style="margin:0"><iframe style="border:0;width:{width}px;'
                     f'height:2400px" srcdoc="{html.escape(report.read_text(encoding="utf-8"), quote=True)}">'
                     f"</iframe>{WIDTH_PROBE}</body></html>", encoding="utf-8")
    dom, stderr = chromium(tmp_path, outer, "--dump-dom", width=max(width + 40, 600), height=2400)
    assert console_messages(stderr) == [], console_messages(stderr)
    scroll, client = (int(v) for v in re.search(r'data-scroll="(\d+) (\d+)"', dom).groups())
    chromium(tmp_path, outer, f"--screenshot={shot}", width=max(width + 40, 600), height=2400)
    return scroll, client


def test_the_width_check_sees_a_page_wider_than_the_phone(tmp_path):
    wide = tmp_path / "wide.html"
    wide.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width"></head><body>'
                    f'<p>{"x" * 300}</p></body></html>')
    scroll, client = page_widths(tmp_path, wide, 390, tmp_path / "wide.png")
    assert client <= 390 < scroll


@pytest.mark.parametrize("width", [1280, 390])
def test_reports_fit_the_desktop_and_the_phone_width(run_dir, tmp_path, width):  # noqa: F811 - pytest fixture
    """The run and the study report scroll only vertically at 1280 and at 390 CSS pixels (wide tables scroll
    inside their own box); screenshots of each in test-output/screenshots/."""
    from tests.test_study_report import make_study
    from tricklab.report import write_study_report

    write_probes(run_dir)
    write_alarms(run_dir)
    store, spec = make_study(tmp_path / "study")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for name, report in (("run", write_run_report(run_dir, tmp_path / "run.html")),
                         ("study", write_study_report(store, spec.name))):
        shot = SCREENSHOTS / f"{name}-report-{width}px.png"
        scroll, client = page_widths(tmp_path, report, width, shot)
        assert client <= width and scroll <= client, f"{name} report at {width}px: {scroll} px wide > {client}"
        assert shot.stat().st_size > 20_000
