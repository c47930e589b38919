"""Test helpers: tiny recipes, writing them, running the CLI as a user would."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_RECIPE = """\
seed: 7
count: 3
render: {resolution: [96, 72], samples: 2}
camera: {fov_deg: 55, look_at: [0, 0, 0.05], distance: {uniform: [0.9, 1.2]}, elevation_deg: {uniform: [35, 60]}, azimuth_deg: {uniform: [0, 360]}}
placement: {area: [0.5, 0.5], min_gap: 0.01}
objects:
  - category: box
    count: {randint: [1, 2]}
    asset: {primitive: box, extents: [0.12, {uniform: [0.08, 0.14]}, 0.1]}
    material: {color: {hsv: [{uniform: [0, 1]}, 0.7, 0.8]}}
  - category: ball
    count: 2
    asset: {primitive: sphere, radius: 0.06}
  - category: ring
    asset: {primitive: torus, major_radius: 0.07, minor_radius: 0.02}
lights:
  - {type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}
"""


def write_recipe(folder: Path, text: str, name: str = "recipe.yaml") -> Path:
    """Write a recipe file (dedented) and return its path."""
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed CLI exactly as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "sceneforge", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=600,
    )
