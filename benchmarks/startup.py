"""Start-up cost of each command: wall time (median of a few runs) beside the top-level imports that
``python -X importtime`` reports, and the time of a ``run`` on an already finished store.

    python benchmarks/startup.py                       # this checkout
    python benchmarks/startup.py --code /path/to/tree  # another checkout (a before/after comparison)
    python benchmarks/startup.py --stages              # the stages before a run's first frame

Renders one tiny store first (not timed). Figures depend on the machine and its load: compare
two trees on the same machine, one after the other. Recorded figures: docs/cli.md, 'Start-up'.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "tabletop.yaml"
TINY = ["-n", "2", "--resolution", "32x24", "--samples", "1", "-q"]
FIRST_FRAME = ["-n", "1", "--resolution", "64x48", "--samples", "4", "--device", "cpu", "-q"]

# Each stage of a run's start-up, timed alone in a fresh interpreter: (stage, setup, timed code).
# A stage's setup is the stages before it, untimed; the worker's stages run as the worker does.
_STAGES = [
    ("conductor: import the CLI (typer, rich, pydantic)", "", "import sceneforge.cli"),
    ("conductor: import the recipe schema (pydantic models)", "import sceneforge.cli", "import sceneforge.scenes.recipe"),
    ("conductor: load and check the recipe", "from sceneforge.scenes.recipe import load_recipe",
     "recipe = load_recipe(RECIPE, {'count': 1, 'render.resolution': [64, 48], 'render.samples': 4})"),
    ("conductor: import the pipeline (store, executors)", "import sceneforge.cli, sceneforge.scenes.recipe",
     "import sceneforge.api, sceneforge.pipeline"),
    ("conductor: sample scene 0 (primitive meshes, FCL, Embree), beside the worker's start",
     "import sceneforge.pipeline\nfrom sceneforge.scenes.sampling import sample\n"
     "from sceneforge.scenes.recipe import load_recipe\nrecipe = load_recipe(RECIPE, {'render.resolution': [64, 48], "
     "'render.samples': 4})", "spec = sample(recipe, 0)"),
    ("worker: import the render server and finishing step", "",
     "import sceneforge.render.server, sceneforge.labelling"),
    ("worker: import bpy", "import sceneforge.render.server, sceneforge.labelling", "import bpy"),
    ("worker: Blender session (factory settings, Cycles)", "import bpy\n"
     "from sceneforge.render.blender_scene import Renderer", "renderer = Renderer('cpu')"),
    ("worker: import USD (pxr), before its threads start", "import bpy, sceneforge.render.server, sceneforge.labelling",
     "import sceneforge.labels.usd_scene"),
    ("worker: build and render frame 0", "from sceneforge.render.blender_scene import Renderer\n"
     "from sceneforge.render.server import console_silenced\nfrom sceneforge.scenes.sampling import sample\n"
     "from sceneforge.scenes.recipe import load_recipe\nrecipe = load_recipe(RECIPE, {'render.resolution': [64, 48], "
     "'render.samples': 4})\nspec = sample(recipe, 0)\nrenderer = Renderer('cpu')",
     "with console_silenced(): exr, _ = renderer.render_to_file(spec)"),
    ("worker: decode, label, USD and write frame 0", "import tempfile\nfrom sceneforge.render.blender_scene import Renderer\n"
     "from sceneforge.render.server import console_silenced, finish_frame\nfrom sceneforge.scenes.sampling import sample\n"
     "from sceneforge.scenes.recipe import load_recipe\nfrom sceneforge.labelling import LabelAndStore\n"
     "from sceneforge.labels.store import DatasetStore\nimport sceneforge.labels.usd_scene\n"
     "recipe = load_recipe(RECIPE, {'render.resolution': [64, 48], 'render.samples': 4})\nspec = sample(recipe, 0)\n"
     "renderer = Renderer('cpu')\nwith console_silenced(): exr, _ = renderer.render_to_file(spec)\n"
     "root = tempfile.mkdtemp()\nDatasetStore.open_for_writing(root + '/out', recipe=recipe.model_dump(mode='json'), "
     "recipe_hash='x', categories=recipe.categories, keypoints=recipe.category_keypoints(), resolution=(64, 48), "
     "requested=1)",
     "done = finish_frame(spec, exr, 0.0, LabelAndStore(root + '/out', usd=True))"),
]


def _sceneforge(code: Path, args: list[str], *, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    flags = ["-X", "importtime"] if importtime else []
    # -P: `python -m` would otherwise put the working folder first on the path, ahead of ``code``.
    return subprocess.run([sys.executable, "-P", *flags, "-m", "sceneforge", *args], capture_output=True, text=True,
                          env=env)


def top_imports(importtime_log: str, count: int) -> list[tuple[str, float]]:
    """The ``count`` top-level imports (not nested in another) with the largest cumulative time, in ms."""
    found = []
    for line in importtime_log.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        if not name[1:].startswith(" "):  # one space before a top-level name, more before nested ones
            found.append((name.strip(), int(cumulative) / 1000))
    return sorted(found, key=lambda item: -item[1])[:count]


def first_frame_timeline(code: Path) -> dict[str, float]:
    """Seconds from launching ``sceneforge run`` (one 64x48 frame, 4 samples, CPU) to each event
    of its run log: the executor starting, the worker starting (taken over by the executor: it was
    spawned as the command started) and ready (its Blender session open), frame 0 done."""
    with tempfile.TemporaryDirectory() as folder:
        launched = time.time()
        result = _sceneforge(code, ["run", str(RECIPE), "-o", f"{folder}/out", *FIRST_FRAME])
        if result.returncode != 0:
            sys.exit(f"run failed:\n{result.stderr}")
        timeline = {"command done": time.time() - launched}
        for line in (Path(folder) / "out" / "logs" / "run.jsonl").read_text().splitlines():
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["time"]).timestamp() - launched
            name = {"start": "executor started", "end": "render loop done"}.get(entry["event"], entry.get("message", ""))
            name = name.split(" (pid")[0].replace("worker-0: ", "worker ")
            if entry["event"] in ("start", "end", "worker") and name not in timeline:
                timeline[name] = at
        return dict(sorted(timeline.items(), key=lambda item: item[1]))


def stage_seconds(code: Path, setup: str, timed: str) -> float:
    """Wall seconds of ``timed`` after ``setup`` in a fresh interpreter (this checkout's sceneforge)."""
    script = (f"import time\nfrom pathlib import Path\nRECIPE = Path({str(RECIPE)!r})\n{setup}\n"
              f"start = time.perf_counter()\n{timed}\nprint(time.perf_counter() - start)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(code), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        sys.exit(f"stage failed:\n{result.stderr}")
    return float(result.stdout.strip().splitlines()[-1])


def print_stages(code: Path, repeat: int) -> None:
    """Print the first-frame timeline of ``sceneforge run`` and each start-up stage's cost (medians)."""
    print(f"sceneforge run {RECIPE.name} {' '.join(FIRST_FRAME)}: medians of {repeat} runs, load average "
          f"{os.getloadavg()[0]:.1f}")
    timelines = [first_frame_timeline(code) for _ in range(repeat)]
    print("| event | seconds after the command starts |\n|---|---|")
    for event in timelines[0]:
        times = [t[event] for t in timelines if event in t]
        print(f"| {event} | {statistics.median(times):.2f} |")
    print("\n| stage, alone in a fresh interpreter | seconds |\n|---|---|")
    print(f"| Python start-up | {statistics.median(_python_start() for _ in range(repeat)):.2f} |")
    for name, setup, timed in _STAGES:
        print(f"| {name} | {statistics.median(stage_seconds(code, setup, timed) for _ in range(repeat)):.2f} |")
    print(f"(load average after: {os.getloadavg()[0]:.1f})")


def _python_start() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-P", "-c", "pass"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose sceneforge is measured")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is printed)")
    parser.add_argument("--top", type=int, default=4, help="top-level imports listed per command")
    parser.add_argument("--stages", action="store_true", help="the stages before a run's first frame, instead")
    options = parser.parse_args()
    if options.stages:
        print_stages(options.code, options.repeat)
        return

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        store = tmp / "store"
        made = _sceneforge(options.code, ["run", str(RECIPE), "-o", str(store), *TINY])
        if made.returncode != 0:
            sys.exit(f"could not render the store:\n{made.stderr}")
        commands = {
            "validate": ["validate", str(RECIPE)],
            "stats": ["stats", str(store)],
            "export coco": ["export", str(store), "--format", "coco", "-o", str(tmp / "coco"), "--overwrite"],
            "export yolo": ["export", str(store), "--format", "yolo", "-o", str(tmp / "yolo"), "--overwrite"],
            "preview": ["preview", str(store), "-o", str(tmp / "sheet.png")],
            "run (finished store)": ["run", str(RECIPE), "-o", str(store), *TINY],
        }
        if _sceneforge(options.code, ["sample", "--help"]).returncode == 0:
            commands["sample"] = ["sample", str(RECIPE), "-n", "1"]

        print(f"sceneforge from {options.code}, {sys.executable}, median of {options.repeat} runs")
        print(f"{'command':22} {'wall s':>7}  top-level imports (cumulative ms, -X importtime)")
        for name, args in commands.items():
            times = []
            for _ in range(options.repeat):
                start = time.perf_counter()
                result = _sceneforge(options.code, args)
                times.append(time.perf_counter() - start)
                if result.returncode != 0:
                    sys.exit(f"{name} failed:\n{result.stderr}")
            traced = _sceneforge(options.code, args, importtime=True)
            imports = ", ".join(f"{module} {ms:.0f}" for module, ms in top_imports(traced.stderr, options.top))
            print(f"{name:22} {statistics.median(times):7.2f}  {imports}")


if __name__ == "__main__":
    main()
