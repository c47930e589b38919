"""The asset library: built-in procedural primitives as trimesh meshes (metres, +Z up).

Every primitive rests with its lowest point on z = 0 and is centred on the Z axis, so that a
pose's translation is the point where it stands on the ground.
"""

from __future__ import annotations

from functools import lru_cache

import trimesh

from .spec import AssetRef

def asset_mesh(asset: AssetRef) -> trimesh.Trimesh:
    """The mesh of an asset; cached by content, so treat the result as read-only."""
    return _primitive_mesh(asset.primitive, tuple(sorted(asset.params.items())))


# Enough for the objects of the frames in flight; randomised primitives are unique and cheap to
# rebuild, and a larger cache only grows the worker (measured by benchmarks/memory_soak.py).
@lru_cache(maxsize=16)
def _primitive_mesh(primitive: str, params: tuple) -> trimesh.Trimesh:
    p = dict(params)
    if primitive == "box":
        mesh = trimesh.creation.box(extents=p["extents"])
    elif primitive == "sphere":
        mesh = trimesh.creation.icosphere(subdivisions=4, radius=p["radius"])
    elif primitive == "cylinder":
        mesh = trimesh.creation.cylinder(radius=p["radius"], height=p["height"], sections=48)
    elif primitive == "cone":
        mesh = trimesh.creation.cone(radius=p["radius"], height=p["height"], sections=48)
    elif primitive == "capsule":
        straight = max(p["height"] - 2 * p["radius"], 0.0)
        mesh = trimesh.creation.capsule(height=straight, radius=p["radius"], count=[24, 24])
    elif primitive == "torus":
        mesh = trimesh.creation.torus(p["major_radius"], p["minor_radius"], major_sections=48, minor_sections=24)
    else:
        raise ValueError(f"unknown primitive {primitive!r}")
    mesh.apply_translation([0.0, 0.0, -mesh.bounds[0][2]])
    mesh.vertices.flags.writeable = False
    return mesh

