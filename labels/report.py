"""The dataset report: one self-contained HTML page of a store to open in a browser.

It shows a sample of frames spread over the store, each as its contact-sheet rows (every view
with its overlays, from ``labels.preview``), the distributions of ``labels.stats`` as bar charts,
the clipped-pixel figures, the failed frames and the recipe. Every image is inlined as a base64
PNG data URI and the page links nothing (no stylesheet, script, font or network request), so the
one file can be mailed or attached to a CI run. Every string that comes from the store's files
(category and camera names, errors, the recipe) is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
from html import escape
from pathlib import Path

import cv2
import numpy as np

from sceneforge.floor.files import atomic_write

from .preview import contact_sheet
from .stats import CLIPPED_WARNING, dataset_stats, plot_pngs
from .store import DatasetStore, frames_of, rejection_summary, view_name

MAX_SAMPLE_WIDTH = 1600  # wider sample rows (many tiles, large renders) are shrunk to keep the page light
CHARTS = {  # plot_pngs's chart -> (section id, heading)
    "class_balance": ("class-balance", "Class balance"),
    "objects_per_image": ("objects-per-image", "Objects per image"),
    "box_size": ("box-size", "Box size"),
    "visibility": ("visibility", "Visibility"),
    "truncation": ("truncation", "Truncation"),
    "depth": ("depth", "Depth"),
}

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.4em 0; }
pre { background: #f4f4f4; padding: 0.8em; overflow-x: auto; white-space: pre-wrap; }
.warning { color: #b00; } figure { margin: 0 0 1.2em 0; } figcaption { font-size: 0.9em; color: #555; }
nav a { margin-right: 0.8em; }
"""

# Marks the page once it has loaded: data-images="LOADED/TOTAL" on <body> counts the images the
# browser decoded, so that a headless browser (the tests) can tell that every image showed.
_IMAGES_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (image) { return image.complete && image.naturalWidth > 0; });
  document.body.setAttribute("data-images", loaded.length + "/" + images.length);
});
"""


def write_report(store: DatasetStore, output: Path, frames: int = 6,
                 clipped_threshold: float = CLIPPED_WARNING) -> Path:
    """Write the report of ``store`` to ``output`` (atomically; its folder is created) and return
    the path; ``frames``: how many frames to show, spread evenly over the store."""
    page = report_html(store, frames, clipped_threshold)
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(output, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return output


def report_html(store: DatasetStore, frames: int = 6, clipped_threshold: float = CLIPPED_WARNING) -> str:
    """The report of ``store`` as one self-contained HTML document."""
    records = store.records()
    numbers = dataset_stats(store, clipped_threshold)
    failures = store.failures()
    charts = plot_pngs(numbers)
    name = escape(store.root.name or str(store.root))
    sections = [
        ("summary", "Summary", _summary(store, records, numbers, failures)),
        ("frames", "Sample frames", _samples(store, records, frames)),
        *((section, heading, _chart(charts[chart], heading) + (_class_table(numbers) if chart == "class_balance" else ""))
          for chart, (section, heading) in CHARTS.items()),
        ("clipped", "Clipped pixels", _clipped(numbers, charts["clipped"])),
        ("failed", "Failed frames", _failed(failures)),
        ("recipe", "Recipe", _recipe(store)),
    ]
    nav = "".join(f'<a href="#{section}">{heading}</a>' for section, heading, _ in sections)
    body = "".join(f'<section id="{section}"><h2>{heading}</h2>{content}</section>\n'
                   for section, heading, content in sections)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>SceneForge report: {name}</title><style>{_STYLE}</style></head>\n"
            f"<body><h1>SceneForge report: {name}</h1><nav>{nav}</nav>\n{body}"
            f"<script>{_IMAGES_CHECK}</script></body></html>\n")


def _summary(store: DatasetStore, records: list[dict], numbers: dict, failures: list[dict]) -> str:
    counts = store.meta.get("counts", {})
    width, height = store.meta.get("resolution", ("?", "?"))
    rows = [("store", str(store.root.resolve())), ("frames", str(numbers["frames"])), ("views", str(len(records))),
            ("cameras", ", ".join(c or "(single camera)" for c in store.cameras)),
            ("resolution", f"{width}x{height}"),
            ("objects", str(sum(len(r["objects"]) for r in records))),
            ("sequences", str(len({r["sequence"]["scene_index"] for r in records if "sequence" in r}))),
            ("requested views", str(counts.get("requested", "?"))), ("failed views", str(len(failures)))]
    if rejection := rejection_summary(records):  # the refiner's acceptance check (docs/refiner.md)
        rows.append(("refined views rejected", f"{rejection['rejected']} of {rejection['scored']} "
                                                f"({100 * rejection['rejection_rate']:.1f} %)"))
    return "<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in rows) + "</table>"


def _samples(store: DatasetStore, records: list[dict], count: int) -> str:
    """Up to ``count`` frames, evenly spread over the store, each with all its views."""
    frames = frames_of(records)
    if not frames:
        return "<p>The store has no finished frames.</p>"
    picks = sorted({int(k) for k in np.linspace(0, len(frames) - 1, min(count, len(frames))).round()})
    figures = []
    for views in (frames[k] for k in picks):
        index = views[0]["index"]
        sheet = contact_sheet(store, [index])
        if sheet.shape[1] > MAX_SAMPLE_WIDTH:
            scale = MAX_SAMPLE_WIDTH / sheet.shape[1]
            sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        about = [f"frame {index}"]
        if "sequence" in views[0]:
            about.append(f"sequence {views[0]['sequence']['scene_index']}, frame {views[0]['sequence']['frame']}")
        for record in views:
            visible = sum(o["visible_pixels"] > 0 for o in record["objects"])
            clipped = f", {record['clipped_fraction']:.1%} clipped" if "clipped_fraction" in record else ""
            about.append(f"{view_name(record) or 'view'}: {visible} visible object(s){clipped}")
        caption = escape("; ".join(about))
        figures.append(f'<figure><img alt="{escape(f"frame {index}")}" src="{_data_uri(_png(sheet))}">'
                       f"<figcaption>{caption}</figcaption></figure>")
    return (f"<p>{len(picks)} of {len(frames)} frame(s): per view RGB, depth, normals, instances (boxes, "
            "class names, keypoints, dashed amodal outlines) and the store's other passes.</p>" + "".join(figures))


def _chart(png: bytes, heading: str) -> str:
    return f'<img alt="{escape(heading)}" src="{_data_uri(png)}">'


def _class_table(numbers: dict) -> str:
    rows = ""
    for c in numbers["categories"]:
        visibility = "-" if c["mean_visibility"] is None else f"{c['mean_visibility']:.2f}"
        rows += (f"<tr><td>{escape(c['name'])}</td><td>{c['objects']}</td><td>{c['visible']}</td>"
                 f"<td>{visibility}</td></tr>")
    return f"<table><tr><th>class</th><th>objects</th><th>visible</th><th>mean visibility</th></tr>{rows}</table>"


def _clipped(numbers: dict, png: bytes) -> str:
    if numbers["clipped_max"] is None:
        return "<p>The store's records carry no clipped-pixel figures (written before they existed).</p>"
    threshold = numbers["clipped_threshold"]
    over = numbers["overexposed"]
    text = (f"<p>Share of pixels with a channel at 255, per view: mean {numbers['clipped_mean']:.2%}, "
            f"max {numbers['clipped_max']:.2%}; {len(over)} view(s) above {threshold:.1%}.</p>")
    if over:
        listed = ", ".join(f"{f['index']} ({f['clipped_fraction']:.1%})" for f in over)
        text += (f'<p class="warning">Clipped: {escape(listed)}. Lower camera.exposure.ev or the light, or use '
                 "camera.exposure.auto.</p>")
    return text + _chart(png, "clipped pixels")


def _failed(failures: list[dict]) -> str:
    if not failures:
        return "<p>None: the last run finished every frame it rendered.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(f.get('index', '?')))}</td><td>{escape(str(f.get('camera', '')))}</td>"
        f"<td>{escape(str(f.get('attempts', '?')))}</td><td><pre>{escape(str(f.get('error', '')))}</pre></td></tr>"
        for f in failures)
    return (f'<p class="warning">{len(failures)} view(s) failed in the last run (failed.jsonl); rerunning the same '
            f"command renders them again.</p><table><tr><th>frame</th><th>camera</th><th>attempts</th>"
            f"<th>error</th></tr>{rows}</table>")


def _recipe(store: DatasetStore) -> str:
    recipe = store.meta.get("recipe")
    if recipe is None:
        return "<p>dataset.json holds no recipe.</p>"
    return (f"<p>As stored in dataset.json (recipe hash {escape(str(store.meta.get('recipe_hash', '?')))}).</p>"
            f"<pre>{escape(json.dumps(recipe, indent=2, ensure_ascii=False))}</pre>")


def _png(image: np.ndarray) -> bytes:
    _, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return png.tobytes()


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
