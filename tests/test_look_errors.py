"""Bad distribution, light, environment and camera settings: exit code 2 and FILE:LINE:COL: field."""

from __future__ import annotations

import re

import pytest

from .helpers import ROOT, TINY_RECIPE, run_cli, write_recipe

HDRI = ROOT / "examples" / "assets" / "hdri" / "studio_small_03_256.hdr"


@pytest.mark.parametrize(("text", "expected"), [
    ("camera:\n  distance: {uniform: [3, 1]}\n", r":2:23: camera\.distance\.uniform: needs lo <= hi"),
    ("camera:\n  roll_deg: {normal: [0, -1]}\n", r":2:22: camera\.roll_deg\.normal: the standard deviation must be >= 0"),
    ("camera:\n  target_jitter: {uniform_box: {low: [0, 1, 0], high: [1, 0, 1]}}\n",
     r":2:32: camera\.target_jitter\.uniform_box: needs low <= high in every coordinate"),
    ("camera:\n  look_at: {on_sphere: {radius: -1}}\n", r":2:33: camera\.look_at\.on_sphere\.radius: .*greater than 0"),
    ("camera:\n  look_at: [1, 2]\n", r":2:12: camera\.look_at: too few values \(nothing at position 2\)"),
    ("camera:\n  look_at: everywhere\n", r":2:12: camera\.look_at: .*'scene_center', 'random_object' or 'all_objects'"),
    ("camera:\n  dof: {fstop: 0}\n", r":2:16: camera\.dof\.fstop: must lie in \[0\.001, 1e\+06\]"),
    ("lights:\n  - {type: sun, energy: 1, kelvin: 900}\n", r":2:36: lights\[0\]\.kelvin: must lie in \[1667, 25000\]"),
    ("lights:\n  - {type: sun, energy: 1, kelvin: {normal: [5000, 100]}}\n",
     r":2:36: lights\[0\]\.kelvin: must lie in \[1667, 25000\], this value can be -inf \.\. inf \(clip the normal\)"),
    ("lights:\n  - {type: spot, energy: 1, spot_size_deg: 200}\n", r":2:44: lights\[0\]\.spot_size_deg: must lie in \[1, 180\]"),
    ("lights:\n  - {type: point, energy: 1, count: {randint: [-1, 2]}}\n", r":2:37: lights\[0\]\.count: must lie in \[0, 1000\]"),
    ("lights:\n  - {type: point, energy: 1, color: [1, 0, 0], kelvin: 3000}\n", r":2:5: lights\[0\]: give color or kelvin, not both"),
    ("lights:\n  - {type: laser, energy: 1}\n", r":2:12: lights\[0\]\.type: expected 'sun', 'point', 'spot' or 'area'"),
    (f"background:\n  color: [1, 1, 1]\n  hdri: {HDRI}\n", r":2:3: background: give color or hdri, not both"),
    ("background:\n  hdri: sky/missing.hdr\n", r":2:9: background\.hdri: file not found: .*/sky/missing\.hdr"),
    ("background:\n  hdri: recipe.yaml\n", r":2:9: background\.hdri: expected a \.hdr or \.exr file"),
    ("background:\n  image: photo.png\n", r":2:10: background\.image: file not found: .*/photo\.png"),
])
def test_bad_settings_exit_2_naming_file_line_and_field(tmp_path, text, expected):
    path = write_recipe(tmp_path, text)
    result = run_cli("validate", path)
    assert result.returncode == 2, result.stderr
    assert re.search(re.escape(str(path)) + expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("visibility", "expected"), [
    # More objects asked for than the scene has (4 at most): no camera pose is even tried.
    ("{min_objects: 5}", r"camera\.visibility: scene 0 frame 0 has \d object\(s\), fewer than min_objects = 5"),
    # Objects hidden: the camera looks away from them, so every pose fails; retries are bounded.
    ("{min_objects: 1, max_tries: 7}", r"camera\.visibility: scene 0 frame 0: no camera pose out of 7 shows 1 object"),
])
def test_impossible_visibility_fails_after_bounded_retries(tmp_path, visibility, expected):
    text = TINY_RECIPE.replace("camera: {fov_deg: 55, look_at: [0, 0, 0.05], ",
                               f"camera: {{visibility: {visibility}, fov_deg: 55, look_at: [0, 0, 0.05], ")
    if "max_tries" in visibility:
        text = text.replace("look_at: [0, 0, 0.05]", "look_at: [0, 0, 3]")  # the camera looks at the sky
    result = run_cli("validate", write_recipe(tmp_path, text))
    assert result.returncode == 2, result.stderr
    assert re.search(expected, result.stderr), result.stderr
    assert "Traceback" not in result.stderr
