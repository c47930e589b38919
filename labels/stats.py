"""Dataset statistics: class balance, objects per image (per view of a rig), box-size, visibility,
truncation and depth distributions, and the share of clipped pixels per frame.

Everything comes from ``frames.jsonl`` (no image is read), so it is fast on large stores. An
object's depth is the middle of its visible depth range.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .store import DatasetStore, view_name

VISIBILITY_BINS = np.linspace(0.0, 1.0, 11)
TRUNCATION_BINS = np.linspace(0.0, 1.0, 11)
# Box size as sqrt(width * height) in pixels; COCO's small/medium/large limits (32, 96) are edges.
BOX_SIZE_BINS = [0, 8, 16, 32, 64, 96, 128, 256, 512, 1024, 8192]
CLIPPED_BINS = [0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
CLIPPED_WARNING = 0.02  # frames with a larger share of clipped pixels are reported (--clipped-threshold)


def overexposed(records: list[dict], threshold: float = CLIPPED_WARNING) -> list[dict]:
    """The records whose image has more than ``threshold`` of its pixels clipped, worst first
    (records written before the field existed are never listed)."""
    over = [r for r in records if r.get("clipped_fraction", 0.0) > threshold]
    return sorted(over, key=lambda r: -r["clipped_fraction"])


def clipped_warning(records: list[dict], threshold: float = CLIPPED_WARNING) -> str | None:
    """One line saying how many frames clip more than ``threshold`` and what to do; None when none do."""
    over = overexposed(records, threshold)
    if not over:
        return None
    worst = ", ".join(f"{r['index']} ({r['clipped_fraction']:.0%})" for r in over[:5])
    return (f"{len(over)} of {len(records)} frame(s) have more than {threshold:.1%} of their pixels clipped "
            f"(worst: {worst}); lower camera.exposure.ev or the light, or use camera.exposure.auto "
            f"(docs/recipes.md, camera.exposure)")


def dataset_stats(store: DatasetStore, clipped_threshold: float = CLIPPED_WARNING) -> dict:
    """Counts and histograms of a store (plain data, JSON-serialisable)."""
    records = store.records()
    clipped = [r["clipped_fraction"] for r in records if "clipped_fraction" in r]
    names = {c["id"]: c["name"] for c in store.meta["categories"]}
    objects = [o for r in records for o in r["objects"]]
    visible = [o for o in objects if o["visible_pixels"] > 0]
    per_image = Counter(sum(o["visible_pixels"] > 0 for o in r["objects"]) for r in records)
    depths = [sum(o["depth_range"]) / 2 for o in visible if o.get("depth_range")]
    visibility = [o["visibility"] for o in visible if o.get("visibility") is not None]
    truncation = [o["truncation"] for o in visible if o.get("truncation") is not None]
    box_sizes = [float(np.sqrt(o["bbox_xywh"][2] * o["bbox_xywh"][3])) for o in visible if o.get("bbox_xywh")]
    depth_edges = np.linspace(min(depths), max(depths) + 1e-9, 11) if depths else np.linspace(0, 1, 11)
    return {
        "frames": len({r["index"] for r in records}),
        **({"views": {name: sum(view_name(r) == name for r in records) for name in store.cameras}}
           if store.cameras != [""] else {}),
        "categories": [
            {
                "name": names[cid],
                "objects": sum(o["category_id"] == cid for o in objects),
                "visible": sum(o["category_id"] == cid for o in visible),
                "mean_visibility": _mean([o["visibility"] for o in visible if o["category_id"] == cid and o.get("visibility") is not None]),
            }
            for cid in sorted(names)
        ],
        "objects_per_image": {int(k): per_image[k] for k in sorted(per_image)},
        "visibility_histogram": {"edges": VISIBILITY_BINS.tolist(), "counts": np.histogram(visibility, VISIBILITY_BINS)[0].tolist()},
        "truncation_histogram": {"edges": TRUNCATION_BINS.tolist(), "counts": np.histogram(truncation, TRUNCATION_BINS)[0].tolist()},
        "box_size_histogram": {"edges": BOX_SIZE_BINS, "counts": np.histogram(box_sizes, BOX_SIZE_BINS)[0].tolist()},
        "depth_histogram": {"edges": depth_edges.tolist(), "counts": np.histogram(depths, depth_edges)[0].tolist()},
        "clipped_histogram": {"edges": CLIPPED_BINS, "counts": np.histogram(clipped, CLIPPED_BINS)[0].tolist()},
        "clipped_mean": _mean(clipped),
        "clipped_max": max(clipped, default=None),
        "clipped_threshold": clipped_threshold,
        "overexposed": [{"index": r["index"], "clipped_fraction": r["clipped_fraction"]}
                        for r in overexposed(records, clipped_threshold)],
    }


def write_plots(stats: dict, folder: Path) -> list[Path]:
    """One PNG per distribution in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, png in plot_pngs(stats).items():
        path = folder / f"{name}.png"
        path.write_bytes(png)
        paths.append(path)
    return paths


def plot_pngs(stats: dict) -> dict[str, bytes]:
    """A bar chart per distribution of ``dataset_stats``, as PNG bytes by chart name."""
    import io

    # A Figure of its own (no pyplot): no GUI backend or global figure state to load, and each
    # figure is freed with its object.
    from matplotlib.figure import Figure

    charts = {
        "class_balance": ([c["name"] for c in stats["categories"]], [c["visible"] for c in stats["categories"]], "visible objects per class"),
        "objects_per_image": ([str(k) for k in stats["objects_per_image"]], list(stats["objects_per_image"].values()), "images by visible object count"),
        "box_size": ([f"{a}-{b}" for a, b in zip(stats["box_size_histogram"]["edges"][:-1], stats["box_size_histogram"]["edges"][1:])],
                     stats["box_size_histogram"]["counts"],
                     "visible objects by box size (sqrt(w*h), px)"),
        "visibility": (_bin_labels(stats["visibility_histogram"]["edges"]), stats["visibility_histogram"]["counts"], "objects by visibility"),
        "truncation": (_bin_labels(stats["truncation_histogram"]["edges"]), stats["truncation_histogram"]["counts"],
                       "visible objects by truncation"),
        "depth": (_bin_labels(stats["depth_histogram"]["edges"]), stats["depth_histogram"]["counts"], "objects by depth (m)"),
        "clipped": (_bin_labels(stats["clipped_histogram"]["edges"]), stats["clipped_histogram"]["counts"],
                    "frames by share of clipped pixels"),
    }
    pngs = {}
    for name, (labels, counts, title) in charts.items():
        figure = Figure(figsize=(6, 3.2), dpi=100)
        axes = figure.subplots()
        axes.bar(labels, counts, color="#4c72b0")
        axes.set_title(title)
        axes.tick_params(axis="x", labelrotation=45, labelsize=7)
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        pngs[name] = buffer.getvalue()
    return pngs


def _bin_labels(edges: list[float]) -> list[str]:
    return [f"{a:.2g}-{b:.2g}" for a, b in zip(edges[:-1], edges[1:])]


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None
