"""A render worker keeps nothing of a scene once the next is built: Blender's datablocks (meshes,
materials, images, worlds, ...) stay bounded however many different scenes one session renders
(benchmarks/memory_soak.py measures the whole worker's memory over 2000 frames), and nothing of
itself once it leaves: no temporary folder is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT, TINY_RECIPE, write_recipe

ASSETS = ROOT / "examples" / "assets"

RECIPE = f"""\
seed: 3
count: 6
render: {{resolution: [32, 24], samples: 1}}
camera: {{fov_deg: 50, look_at: [0, 0, 0.05], distance: 1.0, elevation_deg: 45, azimuth_deg: {{uniform: [0, 360]}}}}
placement: {{area: [0.6, 0.6], min_gap: 0.01}}
assets:
  - {{category: cow, path: {ASSETS}/spot/spot.obj, size: 0.15}}
  - {{category: cube, path: {ASSETS}/gltf/BoxVertexColors.glb, size: 0.08}}
objects:
  - {{category: cow, count: {{randint: [0, 1]}}, asset: {{library: cow}}}}
  - {{category: cube, count: {{randint: [0, 1]}}, asset: {{library: cube}}}}
  - category: box
    count: {{randint: [1, 2]}}
    asset: {{primitive: box, extents: [0.08, 0.08, {{uniform: [0.04, 0.1]}}]}}
    material: {{texture_folder: {ASSETS}/textures/sets, texture_size: 0.1}}
ground: {{size: 3, material: {{texture_folder: {ASSETS}/textures/objects, texture_size: 0.5}}}}
lights: [{{type: sun, energy: 3, elevation_deg: 60, azimuth_deg: 30}}]
background:
  hdri: {ASSETS}/hdri
  image: {{choice: [{ASSETS}/textures/objects/coffee.jpg, {ASSETS}/textures/floor/bricks.jpg]}}
"""

# Renders scenes 0, 1, 2 twice over in one Blender session and prints, after each, how many of
# each kind of datablock Blender holds and the world's importance-map resolution.
SESSION = """
import json, sys
from pathlib import Path
import bpy
from sceneforge.render.blender_scene import Renderer
from sceneforge.render.server import console_silenced
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample

recipe = load_recipe(Path(sys.argv[1]))
renderer = Renderer()
kinds = [name for name in dir(bpy.data) if isinstance(getattr(bpy.data, name, None), bpy.types.bpy_prop_collection)]
after = []
with console_silenced():
    for index in (0, 1, 2, 0, 1, 2):
        renderer.render(sample(recipe, index))
        world = bpy.context.scene.world
        after.append({"blocks": {kind: len(getattr(bpy.data, kind)) for kind in kinds},
                      "map": [world.cycles.sampling_method, world.cycles.sample_map_resolution],
                      "hdri": [list(image.size) for image in bpy.data.images if image.source == "FILE"]})
renderer.close()
print(json.dumps(after))
"""


def test_datablocks_of_one_scene_do_not_outlive_it(tmp_path):
    recipe = write_recipe(tmp_path, RECIPE)
    result = subprocess.run([sys.executable, "-c", SESSION, str(recipe)], capture_output=True, text=True,
                            timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    after = json.loads(result.stdout.strip().splitlines()[-1])
    first, second = after[:3], after[3:]
    assert len({json.dumps(a["blocks"]) for a in first}) > 1, "the three scenes differ"
    for a, b in zip(first, second):
        # Rendering the same scene again holds exactly as many datablocks of each kind: nothing of
        # the scenes between was kept.
        assert a["blocks"] == b["blocks"]
        assert a["blocks"]["worlds"] == 1 and a["blocks"]["objects"] >= 4
        # One environment image, the scene's own, and its importance map at the map's resolution
        # (Cycles' "automatic" builds a 4096 x 2048 map for any map: seconds per scene).
        assert len(a["hdri"]) == 1 and a["map"] == ["MANUAL", max(a["hdri"][0])] and max(a["hdri"][0]) == 256


def test_the_soak_recipe_draws_every_kind_of_file_a_job_loads():
    from sceneforge.scenes.recipe import load_recipe
    from sceneforge.scenes.sampling import sample

    specs = [sample(load_recipe(ROOT / "benchmarks" / "memory_soak.yaml"), index) for index in range(12)]
    files = {Path(o.asset.path).suffix for s in specs for o in s.objects if o.asset.path}
    assert {".obj", ".ply", ".stl", ".glb", ".usda", ".usdz"} <= files
    textures = {o.material.texture for s in specs for o in [*s.objects, s.ground] if o.material.texture}
    assert any(Path(t).is_dir() for t in textures) and any(Path(t).is_file() for t in textures)  # sets, photos
    assert len({s.hdri.path for s in specs}) == 3 and len({s.background_image for s in specs}) >= 2
    assert any(o.material.transmission == 1 for s in specs for o in s.objects)
    assert any(o.material.opacity_texture for s in specs for o in s.objects)


def test_a_run_leaves_no_temporary_folder_behind(tmp_path):
    """Blender makes a session folder (blender_XXXXXX) in TMPDIR when bpy is imported and removes it in
    its own teardown, which a worker leaving with os._exit skips: thousands piled up in /tmp."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    recipe = write_recipe(tmp_path, TINY_RECIPE)
    result = subprocess.run([sys.executable, "-m", "sceneforge", "run", str(recipe), "-o", str(tmp_path / "out"), "-n", "2",
                             "--device", "cpu", "--workers", "2", "--threads", "1", "--quiet"],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "out" / "frames.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in scratch.iterdir()) == []
