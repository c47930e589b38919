"""The dataset report: built from real stores (a plain one with a failed frame, a stereo
sequence, one without the newer record fields) and opened in a real headless browser, Debian's
chromium (``apt-get install chromium``; .ci/run installs it)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from sceneforge.labels.report import CHARTS, report_html, write_report
from sceneforge.labels.stats import dataset_stats
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset
from sceneforge.scenes.recipe import load_recipe

from .helpers import run_cli, write_recipe

SECTIONS = ["summary", "frames", *(section for section, _ in CHARTS.values()), "clipped", "failed", "recipe"]
HOSTILE = '</pre><script>document.title="injected"</script><img src=x onerror=console.error("injected")>'

STEREO_SEQUENCE = """\
seed: 3
count: 2
render: {resolution: [48, 36], samples: 1}
sequence: {frames: 2, fps: 10}
camera:
  fov_deg: 60
  look_at: [0, 0, 0.04]
  distance: 0.9
  elevation_deg: 60
  azimuth_deg: 20
  stereo: {baseline: 0.08}
  trajectory: {type: orbit, degrees_per_second: 30}
ground: {size: 8}
placement: {area: [0.4, 0.4], min_gap: 0.02}
objects:
  - category: box
    count: 2
    asset: {primitive: box, extents: [0.12, 0.1, 0.08]}
"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    """Run Debian's headless chromium with console messages logged to stderr."""
    if shutil.which("chromium") is None:
        pytest.fail("the report tests need Debian's chromium: apt-get install chromium")
    return subprocess.run(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", *args],
        capture_output=True, text=True, timeout=120)


def open_in_browser(page: Path, tmp_path: Path) -> tuple[str, np.ndarray]:
    """The DOM after the page loaded (its scripts run) and a screenshot; fails on any console
    message (the report logs none: a message is an error or a warning)."""
    dump = chromium("--dump-dom", page.resolve().as_uri(), profile=tmp_path / "profile")
    assert dump.returncode == 0, dump.stderr
    console = [line for line in dump.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    shot = tmp_path / "shot.png"
    taken = chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.resolve().as_uri(),
                     profile=tmp_path / "profile")
    assert taken.returncode == 0, taken.stderr
    assert [line for line in taken.stderr.splitlines() if ":CONSOLE" in line] == []
    image = cv2.imread(str(shot))
    assert image is not None and image.shape[:2] == (2400, 1280)
    return dump.stdout, image


def check_page(dom: str, screenshot: np.ndarray, html: str) -> None:
    """Every section there, every image decoded by the browser, the screenshot not blank, and
    nothing outside the page referenced."""
    images = html.count("<img ")
    assert f'data-images="{images}/{images}"' in dom  # set by the page once every image has loaded
    assert images >= len(CHARTS) + 2  # the charts, the clipped-pixel chart and at least one frame
    for section in SECTIONS:
        assert f'<section id="{section}">' in dom
    assert len(np.unique(screenshot.reshape(-1, 3), axis=0)) > 50  # text, tables and pictures, not one colour
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', html)  # self-contained
    assert "<link" not in html and "@import" not in html and "url(" not in html


@pytest.fixture
def failed_store(tiny_store, tmp_path) -> DatasetStore:
    """A copy of the tiny store with a failed view and hostile strings in its category names and
    recipe, as a user file could hold them."""
    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root)
    meta = json.loads((root / "dataset.json").read_text())
    meta["categories"][0]["name"] = HOSTILE
    meta["recipe"]["objects"][0]["category"] = HOSTILE
    (root / "dataset.json").write_text(json.dumps(meta))
    store = DatasetStore(root)
    store.write_failures([{"index": 3, "error": f"Traceback ...\nRuntimeError: {HOSTILE}", "attempts": 3}])
    return store


def test_report_of_a_store_with_a_failed_frame_in_a_browser(failed_store, tmp_path):
    page = tmp_path / "pages" / "report.html"
    result = run_cli("report", failed_store.root, "-o", page, "-n", "2")
    assert result.returncode == 0, result.stderr
    assert f"Report: {page.resolve()}" in result.stdout
    html = page.read_text()
    assert HOSTILE not in html
    assert html.count("&lt;/pre&gt;&lt;script&gt;") >= 3  # class table, failure, recipe: escaped text
    dom, screenshot = open_in_browser(page, tmp_path)
    check_page(dom, screenshot, html)
    assert "injected" not in re.search(r"<title>(.*?)</title>", dom).group(1)
    failed = dom.split('<section id="failed">')[1].split("</section>")[0]
    assert "1 view(s) failed" in failed and "<td>3</td>" in failed  # the frame and its attempts
    frames = dom.split('<section id="frames">')[1].split("</section>")[0]
    records = failed_store.records()
    assert frames.count("<figure>") == 2
    assert f"frame {records[0]['index']}" in frames and f"frame {records[-1]['index']}" in frames  # spread
    numbers = dataset_stats(failed_store)
    clipped = dom.split('<section id="clipped">')[1].split("</section>")[0]
    assert f"max {numbers['clipped_max']:.2%}" in clipped


@pytest.fixture(scope="module")
def stereo_sequence(tmp_path_factory) -> DatasetStore:
    folder = tmp_path_factory.mktemp("stereo_sequence")
    return render_dataset(load_recipe(write_recipe(folder, STEREO_SEQUENCE)), folder / "out").store


def test_report_of_a_stereo_sequence_in_a_browser(stereo_sequence, tmp_path):
    page = write_report(stereo_sequence, tmp_path / "report.html", frames=6)
    html = page.read_text()
    dom, screenshot = open_in_browser(page, tmp_path)
    check_page(dom, screenshot, html)
    frames = dom.split('<section id="frames">')[1].split("</section>")[0]
    assert frames.count("<figure>") == 2  # both frames, each one picture with both views
    assert "left:" in frames and "right:" in frames and "sequence 0, frame 1" in frames
    assert "<p>None: the last run finished" in dom


def test_report_of_a_store_without_the_newer_fields(tiny_store, tmp_path):
    """Records written before clipped pixels, truncation, amodal masks and depth ranges existed."""
    root = tmp_path / "old"
    shutil.copytree(tiny_store.root, root)
    lines = []
    for record in DatasetStore(root).records():
        record.pop("clipped_fraction", None)
        for obj in record["objects"]:
            for field in ("truncation", "amodal_mask", "depth_range", "visibility"):
                obj.pop(field, None)
        lines.append(json.dumps(record))
    (root / "frames.jsonl").write_text("\n".join(lines) + "\n")
    html = report_html(DatasetStore(root))
    assert "carry no clipped-pixel figures" in html
    assert all(f'<section id="{section}">' in html for section in SECTIONS)


def test_report_errors(tiny_store, tmp_path):
    missing = run_cli("report", tmp_path / "nothing", "-o", tmp_path / "r.html")
    assert missing.returncode == 2 and "not a SceneForge dataset (no dataset.json)" in missing.stderr
    folder = run_cli("report", tiny_store.root, "-o", tmp_path)
    assert folder.returncode == 2 and "is a folder; name the HTML file" in folder.stderr
    zero = run_cli("report", tiny_store.root, "-o", tmp_path / "r.html", "-n", "0")
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
    root = tmp_path / "store"
    shutil.copytree(tiny_store.root, root)
    (root / "failed.jsonl").write_text('{"index": 1}\nnot json\n')
    corrupt = run_cli("report", root, "-o", tmp_path / "r.html")
    assert corrupt.returncode == 2 and f"{root / 'failed.jsonl'}:2: corrupt failure record" in corrupt.stderr
    assert not (tmp_path / "r.html").exists()
