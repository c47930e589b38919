"""How long a large asset library takes to load, to sample from, and to sample from again in a new
process (the on-disk mesh cache), and how many files each step parsed.

    python benchmarks/library_listing.py [--files 2000]

Writes a library of tiny OBJ and PLY files (a different tetrahedron each) in category folders in a
temporary folder, a recipe drawing 8 objects per scene from it, and prints: ``load_recipe`` time
(listing every file, parsing none), the time to sample 3 scenes in a fresh process with an empty
cache and again in another fresh process (reusing the converted meshes), with the conversion counts;
then, for examples/assets/spot/spot.obj (5856 triangles, a 1024 px texture), the time to convert
it and to read it back from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sceneforge.scenes import assets
from sceneforge.scenes.assets import MESH_CACHE_COUNTS
from sceneforge.scenes.recipe import load_recipe

SPOT = Path(__file__).resolve().parent.parent / "examples" / "assets" / "spot" / "spot.obj"

SCENES = """\
import json, sys, time
from sceneforge.scenes.assets import MESH_CACHE_COUNTS
from sceneforge.scenes.recipe import load_recipe
from sceneforge.scenes.sampling import sample
recipe = load_recipe(sys.argv[1])
start = time.perf_counter()
for i in range(3):
    sample(recipe, i)
print(json.dumps({"seconds": time.perf_counter() - start, **MESH_CACHE_COUNTS}))
"""

RECIPE = """\
assets:
  - {path: library, category_from: folder, size: 0.08}
objects:
  - {category: c0, count: 4, asset: {library: c0}}
  - {category: c1, count: 4, asset: {library: c1}}
placement: {area: [1.5, 1.5]}
"""


def write_library(root: Path, files: int, categories: int = 4) -> None:
    for k in range(files):
        folder = root / f"c{k % categories}"
        folder.mkdir(parents=True, exist_ok=True)
        h = 0.02 + 1e-6 * k
        if k % 2:
            (folder / f"{k}.obj").write_text(f"v 0 0 0\nv 0.1 0 0\nv 0 0.1 0\nv 0 0 {h}\nf 1 3 2\nf 1 2 4\nf 2 3 4\nf 1 4 3\n")
        else:
            (folder / f"{k}.ply").write_text(
                "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
                "element face 4\nproperty list uchar int vertex_indices\nend_header\n"
                f"0 0 0\n0.1 0 0\n0 0.1 0\n0 0 {h}\n3 0 2 1\n3 0 1 3\n3 1 2 3\n3 0 3 2\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        write_library(root / "library", args.files)
        recipe = root / "recipe.yaml"
        recipe.write_text(RECIPE)
        start = time.perf_counter()
        loaded = load_recipe(recipe)
        seconds = time.perf_counter() - start
        listed = sum(len(files) for files in loaded.library.values())
        print(f"load_recipe: {listed} files listed in {seconds:.3f} s, {sum(MESH_CACHE_COUNTS.values())} parsed")
        env = {**os.environ, "SCENEFORGE_CACHE": str(root / "cache")}
        for name in ("empty cache", "warm cache"):
            result = subprocess.run([sys.executable, "-c", SCENES, str(recipe)], capture_output=True, text=True,
                                    env=env, check=True)
            figures = json.loads(result.stdout)
            print(f"3 scenes, new process, {name}: {figures['seconds']:.3f} s, "
                  f"{figures.get('converted', 0)} converted, {figures.get('reused', 0)} read from the cache")
        os.environ["SCENEFORGE_CACHE"] = str(root / "cache")
        ref = assets.asset_ref(SPOT, size=0.2)
        start = time.perf_counter()
        model = assets._converted(ref)
        converted = time.perf_counter() - start
        key = assets._mesh_cache_key(ref)
        assets._store_model(key, model)
        start = time.perf_counter()
        assets._cached_model(key)
        print(f"{SPOT.name}: converted in {converted:.3f} s, read from the cache in {time.perf_counter() - start:.3f} s "
              f"({(assets.mesh_cache_dir() / f'{key}.npz').stat().st_size} bytes)")


if __name__ == "__main__":
    main()
