"""Start-up cost of each command: wall time (median of a few runs) beside the top-level imports that
``python -X importtime`` reports, and the time of a ``run`` on an already finished store.

    python benchmarks/startup.py                       # this checkout
    python benchmarks/startup.py --code /path/to/tree  # another checkout (a before/after comparison)

Renders one tiny store first (not timed). Figures depend on the machine and its load: compare
two trees on the same machine, one after the other. Recorded figures: docs/cli.md, 'Start-up'.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "tabletop.yaml"
TINY = ["-n", "2", "--resolution", "32x24", "--samples", "1", "-q"]


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose sceneforge is measured")
    parser.add_argument("--repeat", type=int, default=5, help="runs per command (the median is printed)")
    parser.add_argument("--top", type=int, default=4, help="top-level imports listed per command")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        store = tmp / "store"
        made = _sceneforge(options.code, ["run", str(RECIPE), "-o", str(store), *TINY])
        if made.returncode != 0:
            sys.exit(f"could not render the store:\n{made.stderr}")
        commands = {
            "validate": ["validate", str(RECIPE)],
            "stats": ["stats", str(store), "--plots", str(tmp / "plots")],
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
