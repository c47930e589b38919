"""The asset library: built-in primitives and asset files as one triangle mesh plus its materials.

Every asset is in metres, +Z up, rests with its lowest point on z = 0 and is centred on the Z
axis, so that a pose's translation is the point where it stands on the ground. The conductor
(labels) and the Blender worker both use ``asset_model``, so the rendered geometry is exactly the
geometry that labels are computed from. Files are parsed once per process (bounded caches), and
converted meshes are kept on disk for every process and later run (``mesh_cache_dir``).

Formats: glTF/GLB, OBJ (+MTL), PLY and STL through trimesh; USD (.usd, .usda, .usdc, .usdz)
through usd-core: the stage is composed (references, payloads, sublayers, variant selections),
meshes are triangulated, metersPerUnit and upAxis applied, UsdPreviewSurface read.

Keypoints: named 3D points of an asset in its own frame (after the normalisation above, so in
metres, +Z up, origin at the centre of the base). Primitives have canonical ones
(``PRIMITIVE_KEYPOINTS``); a USD file declares them as prims under a ``keypoints`` child of its
default prim, one per keypoint, named by it, at the origin of the prim's transform, in the
order they are authored.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import io
import json
import math
import os
import stat
import urllib.parse
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.floor.files import atomic_write
from sceneforge.floor.images import MAX_IMAGE_PIXELS, checked_image_size

from . import mesh as primitives
from .mesh import Mesh
from .spec import AssetRef

MAX_ASSET_BYTES = 256 << 20  # one asset file; larger files are refused before they are read
MAX_COORDINATE = 1e6  # metres from the asset's origin: farther vertices are a broken or mis-scaled file
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".stl")
USD_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
ASSET_SUFFIXES = MESH_SUFFIXES + USD_SUFFIXES
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tga", ".bmp", ".tif", ".tiff")
MAX_LIBRARY_FILES = 10_000  # per assets[] entry
# Faces meeting at more than this angle (degrees) get a hard edge (box corners, cylinder caps): the
# renderer and the USD export split their shading normals there alike.
SHARP_EDGE_ANGLE_DEG = 40.0


class AssetError(ValueError):
    """An asset file that cannot be read; the message names the file and the reason."""


@dataclass(frozen=True)  # compared by value: it holds numbers only
class TextureTransform:
    """glTF's KHR_texture_transform of a map's UVs: scaled, then rotated (radians), then offset."""

    offset: tuple[float, float] = (0.0, 0.0)
    rotation: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)


@dataclass(frozen=True, eq=False)
class AssetMaterial:
    """One surface material of an asset, in glTF's metallic-roughness terms (docs/materials.md).

    Every image is uint8 RGBA (H, W, 4), top row first, as the file stores it (colour maps sRGB,
    data maps linear); factors multiply their map, as in glTF.
    """

    base_color: tuple[float, float, float] = (0.8, 0.8, 0.8)  # linear RGB, multiplies the texture
    texture: np.ndarray | None = None  # base colour image (sRGB); its alpha is the base alpha
    roughness: float = 0.5
    metallic: float = 0.0
    specular: float = 0.5  # Blender's "Specular IOR Level": 0.5 is a dielectric of IOR 1.5
    metallic_roughness_texture: np.ndarray | None = None  # glTF's packing: roughness in G, metallic in B
    normal_texture: np.ndarray | None = None  # tangent space, OpenGL convention (+Y up; DirectX maps flipped on read)
    normal_scale: float = 1.0
    occlusion_texture: np.ndarray | None = None  # ambient occlusion in R
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)  # linear RGB, multiplies emissive_texture
    emissive_texture: np.ndarray | None = None  # sRGB
    emissive_strength: float = 1.0
    bump_texture: np.ndarray | None = None  # height in R (a texture folder's *_Displacement), shading only
    bump_distance: float = 0.0  # metres of height at R = 1
    alpha: float = 1.0  # base alpha factor (glTF baseColorFactor[3], USD opacity)
    alpha_mode: Literal["OPAQUE", "MASK", "BLEND"] = "OPAQUE"  # glTF's; USD opacityThreshold > 0 is MASK
    alpha_cutoff: float = 0.5  # MASK: opaque where alpha >= cutoff, else a hole
    opacity_texture: np.ndarray | None = None  # opacity in R; None: the base colour texture's alpha
    transmission: float = 0.0  # 0 opaque .. 1 glass (KHR_materials_transmission)
    ior: float = 1.5
    clearcoat: float = 0.0
    clearcoat_roughness: float = 0.0
    sheen_color: tuple[float, float, float] = (0.0, 0.0, 0.0)  # linear RGB; black: no sheen
    sheen_roughness: float = 0.0
    uv_transform: TextureTransform = TextureTransform()  # applied to every map's UVs
    # KHR_materials_volume: a transmissive surface encloses a medium that absorbs light, leaving
    # attenuation_color of it after attenuation_distance metres (thickness 0: a thin wall, no medium).
    thickness: float = 0.0  # metres, the medium's typical thickness (glTF's thicknessFactor)
    attenuation_color: tuple[float, float, float] = (1.0, 1.0, 1.0)  # linear RGB
    attenuation_distance: float = math.inf  # metres
    # The extensions' own maps (each multiplies its factor, as in glTF).
    transmission_texture: np.ndarray | None = None  # transmission in R
    clearcoat_texture: np.ndarray | None = None  # clearcoat in R
    clearcoat_roughness_texture: np.ndarray | None = None  # clearcoat roughness in G
    sheen_color_texture: np.ndarray | None = None  # sRGB sheen colour in RGB
    sheen_roughness_texture: np.ndarray | None = None  # sheen roughness in A


@dataclass(frozen=True, eq=False)
class Keypoints:
    """Named points of an asset in its own frame (metres), and the pairs of names a skeleton joins."""

    names: tuple[str, ...] = ()
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (K, 3), in ``names`` order
    skeleton: tuple[tuple[str, str], ...] = ()

    def as_dict(self) -> dict[str, tuple[float, float, float]]:
        """Name -> position, in order (the form ``ObjectSpec.keypoints`` holds)."""
        return {name: tuple(float(v) for v in p) for name, p in zip(self.names, self.positions)}


def _box_corner_name(i: int) -> str:
    """Corner i takes the max along x, y, z where bit 0, 1, 2 of i is set (the bbox3d order)."""
    return "".join(f"{axis}{'+' if (i >> bit) & 1 else '-'}" for bit, axis in enumerate("xyz"))


_BOX_CORNERS = tuple(_box_corner_name(i) for i in range(8))
# Names and skeleton of every primitive's canonical keypoints: box corners (joined by the 12
# edges), the ends of the round primitives' axis, four points on a torus' outer equator.
PRIMITIVE_KEYPOINTS: dict[str, tuple[tuple[str, ...], tuple[tuple[str, str], ...]]] = {
    "box": (_BOX_CORNERS, tuple((_BOX_CORNERS[i], _BOX_CORNERS[i | 1 << bit])
                                for bit in range(3) for i in range(8) if not i >> bit & 1)),
    "sphere": (("bottom", "top"), (("bottom", "top"),)),
    "cylinder": (("bottom", "top"), (("bottom", "top"),)),
    "cone": (("base", "apex"), (("base", "apex"),)),
    "capsule": (("bottom", "top"), (("bottom", "top"),)),
    "torus": (("x+", "y+", "x-", "y-"), (("x+", "y+"), ("y+", "x-"), ("x-", "y-"), ("y-", "x+"))),
}


@dataclass(frozen=True, eq=False)
class AssetModel:
    """An asset ready to build: one read-only mesh, per-vertex UVs and colours, per-face materials."""

    mesh: Mesh
    materials: tuple[AssetMaterial, ...]
    face_materials: np.ndarray  # (F,) index into ``materials``
    uv: np.ndarray | None  # (V, 2), v up (OpenGL convention)
    colors: np.ndarray | None  # (V, 4) uint8 sRGB vertex colours, multiplying the base colour
    keypoints: Keypoints = Keypoints()  # a primitive's canonical ones, or a USD file's
    up_axis: str = "Z"  # the file's axis that was turned to +Z: the declared one, else the file's own


def asset_mesh(asset: AssetRef) -> Mesh:
    """The mesh of an asset; cached by content, so treat the result as read-only."""
    return asset_model(asset).mesh


def asset_model(asset: AssetRef) -> AssetModel:
    """Mesh and materials of an asset; cached by content, so treat the result as read-only."""
    if asset.primitive is not None:
        return _primitive_model(asset.primitive, tuple(sorted(asset.params.items())))
    return _file_model(asset.model_dump_json())


def check_asset_file(path: Path) -> int:
    """The size of an asset file after the cheap checks (it exists, a known format, within
    MAX_ASSET_BYTES); nothing is parsed. Raises AssetError naming the file."""
    try:
        info = path.stat()  # one system call: libraries list thousands of files
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
    if info is None or not stat.S_ISREG(info.st_mode):
        raise AssetError(f"cannot read {path}: no such file")
    if path.suffix.lower() not in ASSET_SUFFIXES:
        raise AssetError(f"cannot read {path}: unknown asset format; expected one of {', '.join(ASSET_SUFFIXES)}")
    if info.st_size > MAX_ASSET_BYTES:
        raise AssetError(f"cannot read {path}: {info.st_size} bytes is more than the {MAX_ASSET_BYTES} byte limit")
    return info.st_size


def asset_ref(
    path: Path, *, variants: Mapping[str, str] | None = None, up_axis: str | None = None,
    scale: float = 1.0, size: float | None = None,
) -> AssetRef:
    """The reference of an asset file with its load options, checked (``check_asset_file``) and
    hashed but not parsed: the hash covers the file's bytes and the options. Raises AssetError."""
    path = path.resolve()
    check_asset_file(path)
    try:
        with path.open("rb") as file:  # bounded even if the file grows after the check
            digest = hashlib.blake2b(file.read(MAX_ASSET_BYTES), digest_size=8)
    except OSError as exc:
        raise AssetError(f"cannot read {path}: {exc.strerror or exc}") from None
    options = {"variants": dict(sorted((variants or {}).items())), "up_axis": up_axis, "scale": scale, "size": size}
    digest.update(json.dumps(options, sort_keys=True).encode())
    return AssetRef(path=str(path), **options, hash=digest.hexdigest())


def file_asset(
    path: Path, *, variants: Mapping[str, str] | None = None, up_axis: str | None = None,
    scale: float = 1.0, size: float | None = None,
) -> AssetRef:
    """The reference of an asset file with its load options (``asset_ref``), parsed now to check it.

    Raises AssetError naming the file.
    """
    ref = asset_ref(path, variants=variants, up_axis=up_axis, scale=scale, size=size)
    asset_model(ref)
    return ref


def ground_model(size: float) -> AssetModel:
    """The ground: a ``size`` x ``size`` square at z = 0 centred on the origin, facing +Z, with
    the primitives' own (grey) material."""
    half = size / 2
    corners = np.array([[-half, -half, 0.0], [half, -half, 0.0], [half, half, 0.0], [-half, half, 0.0]])
    quad = Mesh(corners, [[0, 1, 2], [0, 2, 3]])
    return AssetModel(quad, (AssetMaterial(),), np.zeros(2, dtype=np.int32), None, None)


# Randomised primitives are unique and cheap to rebuild, and a larger cache only grows the worker
# (measured by benchmarks/memory_soak.py); files are few, costly to parse and reused scene after scene.
@lru_cache(maxsize=16)
def _primitive_model(primitive: str, params: tuple) -> AssetModel:
    p = dict(params)
    if primitive == "box":
        mesh = primitives.box(p["extents"])
    elif primitive == "sphere":
        mesh = primitives.icosphere(4, p["radius"])
    elif primitive == "cylinder":
        mesh = primitives.cylinder(p["radius"], p["height"], 48)
    elif primitive == "cone":
        mesh = primitives.cone(p["radius"], p["height"], 48)
    elif primitive == "capsule":
        mesh = primitives.capsule(max(p["height"] - 2 * p["radius"], 0.0), p["radius"], (24, 24))
    elif primitive == "torus":
        mesh = primitives.torus(p["major_radius"], p["minor_radius"], 48, 24)
    else:
        raise ValueError(f"unknown primitive {primitive!r}")
    lift = np.array([0.0, 0.0, -mesh.bounds[0][2]])
    mesh = mesh.translated(lift)
    names, skeleton = PRIMITIVE_KEYPOINTS[primitive]
    keypoints = Keypoints(names, _primitive_keypoints(primitive, p) + lift, skeleton)
    return AssetModel(mesh, (AssetMaterial(),), np.zeros(len(mesh.faces), dtype=np.int32), None, None, keypoints)


def _primitive_keypoints(primitive: str, p: dict) -> np.ndarray:
    """The canonical keypoints of a primitive as ``scenes.mesh`` builds it (centred on the origin; the cone
    with its base at z = 0), in ``PRIMITIVE_KEYPOINTS`` order: each is a vertex of the mesh."""
    if primitive == "box":
        half = np.asarray(p["extents"]) / 2
        return np.array([[half[a] if (i >> a) & 1 else -half[a] for a in range(3)] for i in range(8)])
    if primitive == "torus":
        outer = p["major_radius"] + p["minor_radius"]
        return np.array([[outer, 0.0, 0.0], [0.0, outer, 0.0], [-outer, 0.0, 0.0], [0.0, -outer, 0.0]])
    if primitive == "cone":
        return np.array([[0.0, 0.0, 0.0], [0.0, 0.0, p["height"]]])
    if primitive == "sphere":
        half = p["radius"]
    elif primitive == "cylinder":
        half = p["height"] / 2
    else:  # capsule: the straight part, max(height - 2 radius, 0), between two hemispheres
        half = max(p["height"] / 2, p["radius"])
    return np.array([[0.0, 0.0, -half], [0.0, 0.0, half]])


@dataclass
class _Part:
    """Triangles of one mesh of a file, corner by corner (3 rows per triangle)."""

    corners: np.ndarray  # (3T, 3) positions, file units and axes
    uv: np.ndarray | None  # (3T, 2)
    colors: np.ndarray | None  # (3T, 4) uint8
    face_materials: np.ndarray  # (T,) index into the file's materials


@lru_cache(maxsize=32)
def _file_model(ref_json: str) -> AssetModel:
    ref = AssetRef.model_validate_json(ref_json)
    key = _mesh_cache_key(ref)
    if key is not None and (model := _cached_model(key)) is not None:
        MESH_CACHE_COUNTS["reused"] += 1
        return model
    model = _converted(ref)
    MESH_CACHE_COUNTS["converted"] += 1
    if key is not None:
        _store_model(key, model)
    return model


def _converted(ref: AssetRef) -> AssetModel:
    """Parse an asset file into its normalised model."""
    path = Path(ref.path)
    try:
        keypoints = Keypoints()
        if path.suffix.lower() in USD_SUFFIXES:
            parts, materials, meters_per_unit, file_up, keypoints = _read_usd(path, ref.variants)
        else:
            if ref.variants:
                raise AssetError("variants are a USD feature; this file has none")
            parts, materials = _read_mesh_file(path)
            meters_per_unit, file_up = 1.0, "Y"  # glTF's convention, and most exporters' for OBJ, PLY, STL
        return _normalised(parts, materials, meters_per_unit, ref.up_axis or file_up, ref.scale, ref.size, keypoints)
    except AssetError as exc:
        raise AssetError(f"cannot read {path}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - parsers fail in many ways on damaged files
        raise AssetError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


# The on-disk cache of converted meshes (docs/recipes.md, "Asset libraries"): one .npz per
# converted file, keyed by content, shared by every process (workers, later runs).
MESH_CACHE_COUNTS: Counter[str] = Counter()  # this process' conversions ("converted") and cache hits ("reused")
_CACHE_VERSION = 1


def mesh_cache_dir() -> Path:
    """Where converted meshes are kept: ``$SCENEFORGE_CACHE/meshes``, else ``~/.cache/sceneforge/meshes``."""
    root = os.environ.get("SCENEFORGE_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "sceneforge") / "meshes"


@lru_cache(maxsize=1)
def _converter_hash() -> str:
    """The conversion code itself: a changed reader never reuses meshes an older one converted."""
    return hashlib.blake2b(Path(__file__).read_bytes(), digest_size=8).hexdigest()


def _mesh_cache_key(ref: AssetRef) -> str | None:
    """The cache key of a file asset: its bytes and load options (``ref.hash``), the bytes of the
    files it names (OBJ's MTL files and their maps, glTF's buffers and images) and the converter.
    None for USD, whose composition can pull in any file."""
    path = Path(ref.path)
    suffix = path.suffix.lower()
    if suffix in USD_SUFFIXES:
        return None
    digest = hashlib.blake2b(f"{_CACHE_VERSION}/{_converter_hash()}/{ref.hash}".encode(), digest_size=16)
    try:
        for dependency in _referenced_files(path):
            digest.update(str(dependency.name).encode())
            if dependency.is_file() and dependency.stat().st_size <= MAX_ASSET_BYTES:
                digest.update(hashlib.blake2b(dependency.read_bytes(), digest_size=16).digest())
    except (OSError, ValueError, UnicodeDecodeError):
        return None  # unreadable references: convert without the cache, which reports the problem
    return digest.hexdigest()


def _referenced_files(path: Path) -> list[Path]:
    """Files an OBJ (its MTL files and their maps) or glTF (buffers, images) refers to."""
    suffix = path.suffix.lower()
    found: list[Path] = []
    if suffix == ".obj":
        with open(path, encoding="utf-8", errors="replace") as obj:
            libraries = [path.parent / line.split(None, 1)[1].strip() for line in obj if line.startswith("mtllib ")]
        found += libraries
        for library in libraries:
            if library.is_file() and library.stat().st_size <= MAX_ASSET_BYTES:
                found += [library.parent / line.split()[-1] for line in library.read_text(errors="replace").splitlines()
                          if line.strip().lower().startswith(("map_", "bump ", "disp ", "norm ")) and len(line.split()) > 1]
    elif suffix == ".gltf":
        document = json.loads(path.read_bytes())
        uris = [item.get("uri") for key in ("buffers", "images") for item in document.get(key, [])]
        found += [path.parent / urllib.parse.unquote(uri) for uri in uris if uri and not uri.startswith("data:")]
    return found


def _cached_model(key: str) -> AssetModel | None:
    """The model stored under ``key``, or None when there is none or it is damaged (never trusted:
    every array is checked against the others before use)."""
    file = mesh_cache_dir() / f"{key}.npz"
    try:
        with np.load(file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            vertices, faces = data["vertices"].astype(np.float64), data["faces"].astype(np.int64)
            face_materials = data["face_materials"].astype(np.int32)
            uv = data["uv"].astype(np.float64) if "uv" in data else None
            colors = data["colors"].astype(np.uint8) if "colors" in data else None
            materials = tuple(_material_from(meta["materials"][i], data, i) for i in range(len(meta["materials"])))
            keypoints = Keypoints(tuple(meta["keypoints"]), data["keypoints"].astype(np.float64).reshape(-1, 3),
                                  tuple(tuple(pair) for pair in meta["skeleton"]))
    except FileNotFoundError:
        return None
    except Exception:  # noqa: BLE001 - a damaged or foreign cache file is converted again
        return None
    consistent = (
        meta.get("version") == _CACHE_VERSION and vertices.ndim == 2 and vertices.shape[1] == 3
        and faces.ndim == 2 and faces.shape[1] == 3 and len(faces) == len(face_materials) and len(materials) > 0
        and (not faces.size or 0 <= faces.min() <= faces.max() < len(vertices))
        and (not face_materials.size or 0 <= face_materials.min() <= face_materials.max() < len(materials))
        and (uv is None or uv.shape == (len(vertices), 2)) and (colors is None or colors.shape == (len(vertices), 4))
        and len(keypoints.names) == len(keypoints.positions) and bool(np.all(np.isfinite(vertices)))
    )
    if not consistent:
        return None
    return AssetModel(Mesh(vertices, faces), materials, face_materials, uv, colors, keypoints)


def _store_model(key: str, model: AssetModel) -> None:
    """Write ``model`` under ``key`` atomically (readers see no file or a whole one); a cache that
    cannot be written only costs the next process a conversion."""
    arrays: dict[str, np.ndarray] = {
        "vertices": np.asarray(model.mesh.vertices, dtype=np.float64), "faces": np.asarray(model.mesh.faces, dtype=np.int64),
        "face_materials": model.face_materials, "keypoints": model.keypoints.positions,
    }
    if model.uv is not None:
        arrays["uv"] = model.uv
    if model.colors is not None:
        arrays["colors"] = model.colors
    materials = []
    for i, material in enumerate(model.materials):
        plain = {}
        for item in fields(material):
            value = getattr(material, item.name)
            if isinstance(value, np.ndarray):
                arrays[f"material{i}.{item.name}"] = value
            elif value is not None:
                plain[item.name] = asdict(value) if is_dataclass(value) else value
        materials.append(plain)
    meta = {"version": _CACHE_VERSION, "materials": materials, "keypoints": list(model.keypoints.names),
            "skeleton": [list(pair) for pair in model.keypoints.skeleton]}
    folder = mesh_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(folder / f"{key}.npz", lambda tmp: _save_npz(tmp, meta, arrays))
    except (OSError, TypeError, ValueError):
        pass


def _save_npz(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as file:  # a file object: np.savez would add .npz to the temporary name
        np.savez_compressed(file, meta=np.array(json.dumps(meta)), **arrays)


def _material_from(plain: dict, data: Mapping[str, np.ndarray], index: int) -> AssetMaterial:
    """An AssetMaterial from its cached form: arrays from ``data``, the rest from ``plain``;
    fields the cache lacks keep their defaults."""
    def tuples(value):  # JSON lists back to the tuples the dataclasses hold
        return tuple(map(tuples, value)) if isinstance(value, list) else value

    defaults, values = AssetMaterial(), {}
    for item in fields(AssetMaterial):
        if (key := f"material{index}.{item.name}") in data:
            values[item.name] = data[key].astype(np.uint8)
        elif item.name in plain:
            value, default = plain[item.name], getattr(defaults, item.name)
            if is_dataclass(default):  # TextureTransform
                value = type(default)(**{name: tuples(v) for name, v in value.items()})
            values[item.name] = tuples(value)
    return AssetMaterial(**values)


def _normalised(
    parts: list[_Part], materials: list[AssetMaterial], meters_per_unit: float, up_axis: str,
    scale: float, size: float | None, keypoints: Keypoints,
) -> AssetModel:
    """Parts welded into one mesh in metres, +Z up, scaled, standing on z = 0 on the Z axis; the
    keypoints (file units and axes) moved with it."""
    parts = [p for p in parts if len(p.corners)]
    if not parts:
        raise AssetError("it holds no triangles")
    n = sum(len(p.corners) for p in parts)
    points = np.concatenate([*(p.corners for p in parts), keypoints.positions]).astype(np.float64) * meters_per_unit
    if up_axis == "Y":  # +90 degrees about X: +Y up becomes +Z up
        points = np.stack([points[:, 0], -points[:, 2], points[:, 1]], axis=1)
    corners, marks = points[:n], points[n:]
    if not np.all(np.isfinite(corners)):
        raise AssetError("it has non-finite vertex positions")
    if (farthest := float(np.abs(corners).max())) > MAX_COORDINATE:
        raise AssetError(f"a vertex lies {farthest:g} m from the asset's origin, more than {MAX_COORDINATE:g} m "
                         "(a damaged file, or one in other units: set scale or size)")
    low, high = corners.min(axis=0), corners.max(axis=0)
    if size is not None:
        longest = float(np.max(high - low))
        if longest <= 0:
            raise AssetError("it has no extent to normalise to a size")
        scale = size / longest
    origin = [(low[0] + high[0]) / 2, (low[1] + high[1]) / 2, low[2]]
    corners = (corners - origin) * scale
    keypoints = Keypoints(keypoints.names, (marks - origin) * scale, keypoints.skeleton)
    has_uv = any(p.uv is not None for p in parts)
    has_colors = any(p.colors is not None for p in parts)
    columns = [corners]
    if has_uv:
        columns.append(np.concatenate([p.uv if p.uv is not None else np.zeros((len(p.corners), 2)) for p in parts]))
    if has_colors:
        columns.append(np.concatenate([
            p.colors if p.colors is not None else np.full((len(p.corners), 4), 255) for p in parts
        ]))
    # Weld corners that agree in every attribute: shared vertices shade smoothly in Blender.
    table, inverse = np.unique(np.hstack(columns), axis=0, return_inverse=True)
    faces = inverse.reshape(-1, 3).astype(np.int64)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    mesh = Mesh(table[:, :3], faces[keep])
    face_materials = np.concatenate([p.face_materials for p in parts]).astype(np.int32)[keep]
    return AssetModel(
        mesh=mesh,
        materials=tuple(materials) or (AssetMaterial(),),
        face_materials=face_materials,
        uv=table[:, 3:5].copy() if has_uv else None,
        colors=table[:, -4:].astype(np.uint8) if has_colors else None,
        keypoints=keypoints,
        up_axis=up_axis,
    )


def _read_mesh_file(path: Path) -> tuple[list[_Part], list[AssetMaterial]]:
    """glTF, OBJ, PLY, STL through trimesh: each mesh of the scene, placed by its node transform.

    What trimesh would pass over in silence is checked first: glTF images (present, within the
    image limits) and OBJ faces (three or more corners, each an existing vertex)."""
    import trimesh
    suffix = path.suffix.lower()
    gltf = []
    if suffix in (".gltf", ".glb"):
        document, binary = _gltf_document(path)
        _check_gltf_images(path, document, binary)
        gltf = _gltf_materials(document, _gltf_texture_reader(path, document, binary))
    elif suffix == ".obj":
        _check_obj_faces(path)
    scene = trimesh.load(str(path), force="scene", process=False)
    parts, materials = [], []
    for geometry in scene.dump():
        if not isinstance(geometry, trimesh.Trimesh) or not len(geometry.faces):
            continue  # point clouds and lines have no surface
        faces = np.asarray(geometry.faces)
        visual, uv, colors = geometry.visual, None, None
        material = AssetMaterial()
        if isinstance(visual, trimesh.visual.TextureVisuals):
            if visual.uv is not None and len(visual.uv) == len(geometry.vertices):
                uv = np.asarray(visual.uv, dtype=np.float64)[faces].reshape(-1, 2)
            material = _trimesh_material(visual.material, gltf)
        elif visual.kind == "vertex":
            colors = np.asarray(visual.vertex_colors, dtype=np.uint8)[faces].reshape(-1, 4)
        elif visual.kind == "face":
            colors = np.repeat(np.asarray(visual.face_colors, dtype=np.uint8), 3, axis=0)
        if colors is not None:
            material = AssetMaterial(base_color=(1.0, 1.0, 1.0))  # glTF: vertex colours times a white factor
        parts.append(_Part(np.asarray(geometry.vertices)[faces].reshape(-1, 3), uv, colors,
                           np.full(len(faces), len(materials))))
        materials.append(material)
    return parts, materials


def _gltf_document(path: Path) -> tuple[dict, bytes]:
    """The JSON document of a glTF file and, for a .glb, its binary chunk (read once, parsed once)."""
    data = path.read_bytes()
    if path.suffix.lower() != ".glb":
        return json.loads(data), b""
    if len(data) < 20 or data[:4] != b"glTF":
        raise AssetError("not a binary glTF file (no glTF header)")
    json_length = int.from_bytes(data[12:16], "little")
    rest = data[20 + json_length:]
    binary = rest[8:8 + int.from_bytes(rest[:4], "little")] if len(rest) >= 8 else b""
    return json.loads(data[20:20 + json_length]), binary


def _check_gltf_images(path: Path, document: dict, binary: bytes) -> None:
    """Every image of a glTF file exists and declares a size within the limits (images[i] named)."""
    views = document.get("bufferViews", [])
    for i, image in enumerate(document.get("images", [])):
        uri = image.get("uri")
        try:
            if uri is None:
                view = views[image["bufferView"]]
                start = view.get("byteOffset", 0)
                checked_image_size(binary[start:start + view["byteLength"]])
            elif uri.startswith("data:"):
                checked_image_size(base64.b64decode(uri.partition(",")[2]))
            else:
                file = path.parent / urllib.parse.unquote(uri)
                if not file.is_file():
                    raise ValueError(f"its file {file} is missing")
                checked_image_size(file)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise AssetError(f"images[{i}] ({uri or 'embedded'}): {exc}") from None


# glTF extensions read into AssetMaterial. A file that *requires* an extension outside these is
# refused unless it is a material extension (KHR_materials_*: the material falls back to its core
# PBR, as glTF's fallback rules intend); geometry extensions change what the buffers mean.
GLTF_EXTENSIONS = (
    "KHR_materials_emissive_strength", "KHR_materials_transmission", "KHR_materials_ior", "KHR_materials_clearcoat",
    "KHR_materials_sheen", "KHR_materials_volume", "KHR_texture_transform",
)
# (name, (roughness, metallic) factors, AssetMaterial fields, maps to drop) of a glTF material.
_GltfMaterial = tuple[str | None, tuple[float, float], dict, tuple[str, ...]]
# glTF material key of each map, and the texture-info dictionary that holds it.
_GLTF_MAPS = {
    "texture": ("pbrMetallicRoughness", "baseColorTexture"),
    "metallic_roughness_texture": ("pbrMetallicRoughness", "metallicRoughnessTexture"),
    "normal_texture": (None, "normalTexture"),
    "occlusion_texture": (None, "occlusionTexture"),
    "emissive_texture": (None, "emissiveTexture"),
}
# The extensions' own maps: AssetMaterial field -> (extension, key of its texture info).
_GLTF_EXTENSION_MAPS = {
    "transmission_texture": ("KHR_materials_transmission", "transmissionTexture"),
    "clearcoat_texture": ("KHR_materials_clearcoat", "clearcoatTexture"),
    "clearcoat_roughness_texture": ("KHR_materials_clearcoat", "clearcoatRoughnessTexture"),
    "sheen_color_texture": ("KHR_materials_sheen", "sheenColorTexture"),
    "sheen_roughness_texture": ("KHR_materials_sheen", "sheenRoughnessTexture"),
}


def _gltf_texture_reader(path: Path, document: dict, binary: bytes) -> Callable[[int], np.ndarray]:
    """A function: glTF texture index -> its image as uint8 RGBA (each image decoded once).

    The images were size-checked by _check_gltf_images; a missing or undecodable one raises
    ValueError (named by the caller)."""
    decoded: dict[int, np.ndarray] = {}

    def read(index: int) -> np.ndarray:
        source = document["textures"][index]["source"]
        if source not in decoded:
            from PIL import Image, UnidentifiedImageError
            image = document["images"][source]
            if (uri := image.get("uri")) is None:
                view = document["bufferViews"][image["bufferView"]]
                start = view.get("byteOffset", 0)
                data = binary[start:start + view["byteLength"]]
            elif uri.startswith("data:"):
                data = base64.b64decode(uri.partition(",")[2])
            else:
                data = (path.parent / urllib.parse.unquote(uri)).read_bytes()
            try:
                decoded[source] = _image_array(Image.open(io.BytesIO(data)), what=f"images[{source}]")
            except (UnidentifiedImageError, OSError) as exc:
                raise ValueError(f"images[{source}] cannot be decoded: {exc}") from None
        return decoded[source]

    return read


def _gltf_materials(document: dict, texture: Callable[[int], np.ndarray]) -> list[_GltfMaterial]:
    """Per glTF material: its name and its roughness and metallic factors (to match trimesh's
    material to it), the AssetMaterial fields trimesh does not read (factors of the core and of
    the extensions, the extensions' maps read by ``texture`` (index -> RGBA),
    UV transform), and the maps to drop (those on a second UV set, which the mesh does not
    carry). Raises AssetError naming materials[i] on a bad value."""
    required = document.get("extensionsRequired", [])
    if missing := [e for e in required if e not in GLTF_EXTENSIONS and not e.startswith("KHR_materials_")]:
        raise AssetError(f"it requires the glTF extension(s) {', '.join(missing)}; "
                         f"SceneForge reads {', '.join(GLTF_EXTENSIONS)}")
    found = []
    for i, entry in enumerate(document.get("materials", [])):
        try:
            found.append(_gltf_material_fields(entry, texture))
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, AssetError) as exc:
            raise AssetError(f"materials[{i}] ({entry.get('name', 'unnamed')}): {exc}") from None
    return found


def _gltf_material_fields(entry: dict, texture: Callable[[int], np.ndarray]) -> _GltfMaterial:
    """One glTF material's entry of _gltf_materials."""
    pbr, extensions = entry.get("pbrMetallicRoughness", {}), entry.get("extensions", {})
    mode = entry.get("alphaMode", "OPAQUE")
    if mode not in ("OPAQUE", "MASK", "BLEND"):
        raise ValueError(f"alphaMode {mode!r} is not OPAQUE, MASK or BLEND")
    emissive = tuple(float(c) for c in entry.get("emissiveFactor", (0.0, 0.0, 0.0)))
    fields = {
        "alpha": _unit(pbr.get("baseColorFactor", (1.0, 1.0, 1.0, 1.0))[3]),
        "alpha_mode": mode,
        "alpha_cutoff": _unit(entry.get("alphaCutoff", 0.5)),
        "normal_scale": float(entry.get("normalTexture", {}).get("scale", 1.0)),
        "emissive": emissive,
        "emissive_strength": float(extensions.get("KHR_materials_emissive_strength", {}).get("emissiveStrength", 1.0)),
        "transmission": _unit(extensions.get("KHR_materials_transmission", {}).get("transmissionFactor", 0.0)),
        "ior": float(extensions.get("KHR_materials_ior", {}).get("ior", 1.5)),
    }
    if (clearcoat := extensions.get("KHR_materials_clearcoat")) is not None:
        fields["clearcoat"] = _unit(clearcoat.get("clearcoatFactor", 0.0))
        fields["clearcoat_roughness"] = _unit(clearcoat.get("clearcoatRoughnessFactor", 0.0))
    if (sheen := extensions.get("KHR_materials_sheen")) is not None:
        fields["sheen_color"] = tuple(_unit(c) for c in sheen.get("sheenColorFactor", (0.0, 0.0, 0.0)))
        fields["sheen_roughness"] = _unit(sheen.get("sheenRoughnessFactor", 0.0))
    if (volume := extensions.get("KHR_materials_volume")) is not None:
        fields["thickness"] = max(float(volume.get("thicknessFactor", 0.0)), 0.0)
        fields["attenuation_color"] = tuple(_unit(c) for c in volume.get("attenuationColor", (1.0, 1.0, 1.0)))
        distance = float(volume.get("attenuationDistance", math.inf))
        if not distance > 0:
            raise ValueError(f"KHR_materials_volume's attenuationDistance {distance:g} is not positive")
        fields["attenuation_distance"] = distance
    for name, (extension, key) in _GLTF_EXTENSION_MAPS.items():
        info = extensions.get(extension, {}).get(key)
        if isinstance(info, dict) and not info.get("texCoord", 0):  # a second UV set: dropped
            fields[name] = texture(int(info["index"]))
    infos = {name: (pbr if parent else entry).get(key) for name, (parent, key) in _GLTF_MAPS.items()}
    infos = {name: info for name, info in infos.items() if isinstance(info, dict)}
    # One transform for every map: the base colour's, else the first map's that has one.
    for info in sorted(infos.values(), key=lambda info: info is not infos.get("texture")):
        if (transform := info.get("extensions", {}).get("KHR_texture_transform")) is not None:
            fields["uv_transform"] = TextureTransform(
                offset=tuple(float(v) for v in transform.get("offset", (0.0, 0.0))),
                rotation=float(transform.get("rotation", 0.0)),
                scale=tuple(float(v) for v in transform.get("scale", (1.0, 1.0))),
            )
            break
    second_uv = tuple(name for name, info in infos.items()
                      if info.get("extensions", {}).get("KHR_texture_transform", {}).get("texCoord", info.get("texCoord", 0)))
    factors = (float(pbr.get("roughnessFactor", 1.0)), float(pbr.get("metallicFactor", 1.0)))
    return entry.get("name"), factors, fields, second_uv


def _check_obj_faces(path: Path) -> None:
    """Every face of an OBJ file has three or more corners, each naming an existing vertex."""
    vertices = 0
    with open(path, encoding="utf-8", errors="replace") as obj:
        for number, line in enumerate(obj, start=1):
            if line.startswith("v "):
                vertices += 1
            elif line.startswith("f "):
                corners = line.split()[1:]
                try:
                    indices = [int(corner.split("/")[0]) for corner in corners]
                except ValueError:
                    raise AssetError(f"line {number}: a face corner is not a vertex number: {line.strip()!r}") from None
                if len(indices) < 3:
                    raise AssetError(f"line {number}: a face needs 3 or more corners, this one has "
                                     f"{len(indices)} (a truncated file?)")
                if any(i == 0 or abs(i) > vertices for i in indices):
                    raise AssetError(f"line {number}: a face names vertex {indices}, but only {vertices} "
                                     "vertices come before it")


def _trimesh_material(material, gltf: list[_GltfMaterial] = ()) -> AssetMaterial:
    """glTF PBR (its maps, plus the factors and extensions of the glTF material it came from,
    ``gltf``: see _gltf_materials), or OBJ's MTL (diffuse colour and map, a dielectric)."""
    import trimesh
    if isinstance(material, trimesh.visual.material.SimpleMaterial):
        base = (1.0, 1.0, 1.0) if material.diffuse is None else tuple(float(c) / 255 for c in np.asarray(material.diffuse)[:3])
        return AssetMaterial(base, None if material.image is None else _image_array(material.image), 0.5, 0.0)
    if not isinstance(material, trimesh.visual.material.PBRMaterial):
        return AssetMaterial()
    factor = material.baseColorFactor
    # glTF's defaults for absent factors are 1.0.
    roughness = 1.0 if material.roughnessFactor is None else material.roughnessFactor
    metallic = 1.0 if material.metallicFactor is None else material.metallicFactor
    fields, dropped = {}, ()
    for gltf_name, factors, found, skip in gltf:  # the glTF material this one was made from
        if gltf_name == material.name and np.allclose(factors, (roughness, metallic), atol=1e-6):
            fields, dropped = found, skip
            break
    maps = {}
    for name, attribute in (("texture", "baseColorTexture"), ("metallic_roughness_texture", "metallicRoughnessTexture"),
                            ("normal_texture", "normalTexture"), ("occlusion_texture", "occlusionTexture"),
                            ("emissive_texture", "emissiveTexture")):
        image = getattr(material, attribute, None)
        if image is not None and name not in dropped:
            maps[name] = _image_array(image, normal=name == "normal_texture", what=name)
    base = (1.0, 1.0, 1.0) if factor is None else tuple(float(c) / 255 for c in np.asarray(factor)[:3])
    return AssetMaterial(base_color=base, roughness=_unit(roughness), metallic=_unit(metallic), **maps, **fields)


def _image_array(image, *, normal: bool = False, what: str = "texture") -> np.ndarray:
    """A PIL image (opened, not decoded yet) as uint8 RGBA, refusing images beyond MAX_IMAGE_PIXELS,
    and a ``normal`` map that is not a colour image (a tangent-space normal needs three channels)."""
    if image.width * image.height > MAX_IMAGE_PIXELS:
        raise AssetError(f"{what}: a {image.width}x{image.height} image is larger than {MAX_IMAGE_PIXELS} pixels")
    if normal and len(image.getbands()) < 3:
        raise AssetError(f"{what}: a normal map needs 3 channels (RGB), this image has {len(image.getbands())} "
                         f"({image.mode})")
    return np.asarray(image.convert("RGBA"), dtype=np.uint8)


def library_files(base: Path, pattern: str) -> list[Path]:
    """The asset files an ``assets[].path`` names: a file, a folder's asset files, or a glob
    (``**`` recurses), relative to ``base``. Raises AssetError when nothing matches."""
    target = base / pattern
    if any(c in pattern for c in "*?["):
        files = sorted(Path(p).resolve() for p in glob.glob(str(target), recursive=True) if Path(p).is_file())
    elif target.is_dir():
        files = sorted(folder_files(target.resolve()), key=lambda p: p.name)  # the order of Paths in one folder
    else:
        return [target.resolve()]
    files = [p for p in files if p.suffix.lower() in ASSET_SUFFIXES]
    if not files:
        raise AssetError(f"{pattern}: matches no asset files ({', '.join(ASSET_SUFFIXES)})")
    if len(files) > MAX_LIBRARY_FILES:
        raise AssetError(f"{pattern}: matches {len(files)} asset files, more than {MAX_LIBRARY_FILES}")
    return files


# A texture set's maps, by the suffix of the file name's stem (ambientCG's names; case ignored).
SET_MAPS = {
    "color": "texture", "basecolor": "texture", "roughness": "roughness", "metalness": "metallic",
    "normalgl": "normal_gl", "normaldx": "normal_dx", "opacity": "opacity_texture",
    "displacement": "bump_texture", "ambientocclusion": "occlusion_texture", "emission": "emissive_texture",
}
SET_BUMP_DISTANCE = 0.005  # metres of height a set's *_Displacement map spans (it is shading only)


def _set_map(file: Path) -> str | None:
    """The map a file of a texture set holds (a value of SET_MAPS), or None for other files."""
    name = file.stem.lower()
    return next((held for suffix, held in SET_MAPS.items() if name.endswith("_" + suffix)), None)


def is_texture_set(folder: Path) -> bool:
    """Whether a folder is a texture set: it holds a file named like a map (``*_Color``, ...)."""
    return folder.is_dir() and any(p.is_file() and _set_map(p) for p in folder.iterdir())


def texture_files(folder: Path) -> tuple[str, ...]:
    """The textures of a texture folder (absolute paths, sorted): the folder itself when it is a
    texture set, its set folders when it holds sets, else its images, each checked to read within
    the size limits. Raises AssetError naming the folder or the file."""
    if not folder.is_dir():
        raise AssetError(f"{folder}: no such folder")
    if is_texture_set(folder):
        files = [str(folder.resolve())]
    elif sets := sorted(str(p.resolve()) for p in folder.iterdir() if is_texture_set(p)):
        if others := sorted(p.name for p in folder.iterdir() if p.is_dir() and str(p.resolve()) not in sets):
            raise AssetError(f"{folder}: a library of texture sets, but {others[0]}/ is not one (no file named "
                             f"like a map: *_Color, *_Roughness, ...)" + (f" (and {len(others) - 1} more)" if len(others) > 1 else ""))
        files = sets
    else:
        files = sorted(str(p.resolve()) for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AssetError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)}) and no texture sets "
                         "(folders of *_Color, *_Roughness, ... maps)")
    for file in files:
        if Path(file).is_dir():
            texture_maps(file)  # every map read and checked now, not mid-run
        else:
            check_texture(Path(file))
    return tuple(files)


def folder_files(folder: Path, recursive: bool = False) -> list[Path]:
    """The files in a (resolved) folder, and in its sub-folders when ``recursive``, as resolved
    paths: one directory read per folder, a symbolic link followed only to its file."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_file():
                found.append(Path(entry.path).resolve() if entry.is_symlink() else Path(entry.path))
            elif recursive and entry.is_dir(follow_symlinks=False):
                found += folder_files(Path(entry.path), recursive)
    return found


def texture_candidates(path: Path) -> tuple[str, ...]:
    """The textures one option of a ``texture_folder`` stands for (absolute paths, sorted): an
    image file, or a folder's images or texture sets (``texture_files``). Each is opaque to sampling
    (it becomes ``MaterialSpec.texture``) and checked here. Raises AssetError naming the path."""
    if path.is_file():
        return (check_texture(path),)
    return texture_files(path)


def check_texture(path: Path) -> str:
    """One texture candidate checked (a known image format within the size limits), as an absolute
    path. Raises AssetError naming it."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise AssetError(f"cannot read {path}: unknown image format; expected one of {', '.join(IMAGE_SUFFIXES)}")
    try:
        checked_image_size(path)
    except (OSError, ValueError) as exc:
        raise AssetError(f"cannot read {path}: {exc}") from None
    return str(path.resolve())


def environment_level(path: str) -> float:
    """The light level of an equirectangular environment map: the cosine-weighted mean luminance
    (Rec. 709) of its upper hemisphere, the map's top half (+Z is up). It is the irradiance the
    map gives a surface facing up, divided by pi: a map of constant radiance L has level L, as a
    world colour of L does. Read once per file and process (the size checked before decoding)."""
    file = Path(path)
    stat = file.stat()
    return _environment_level(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _environment_level(path: str, size: int, mtime_ns: int) -> float:
    pixels = read_environment(Path(path))
    height = pixels.shape[0]
    polar = (np.arange(height) + 0.5) / height * math.pi  # each row's angle from +Z
    upper = polar < math.pi / 2
    weights = np.cos(polar[upper]) * np.sin(polar[upper])  # cos(theta) dOmega, per row
    luminance = pixels[upper] @ np.array([0.2126, 0.7152, 0.0722])  # (rows, W)
    return float((luminance.mean(axis=1) * weights).sum() / weights.sum())


def read_environment(path: Path) -> np.ndarray:
    """An HDR image (Radiance ``.hdr`` or OpenEXR) as float32 linear RGB (H, W, 3), top row first;
    its declared size is checked before its pixels decode. Raises AssetError naming the file."""
    try:
        checked_image_size(path)
        if path.suffix.lower() == ".exr":
            import OpenEXR

            channels = OpenEXR.File(str(path)).channels()
            if "RGB" in channels:
                pixels = channels["RGB"].pixels
            elif "RGBA" in channels:
                pixels = channels["RGBA"].pixels[..., :3]
            else:
                pixels = np.stack([channels[c].pixels for c in "RGB"], axis=-1)
        else:
            import cv2

            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if bgr is None or bgr.ndim != 3:
                raise ValueError("not a readable Radiance HDR image")
            pixels = bgr[..., 2::-1]
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(f"cannot read {path}: {exc}") from None
    pixels = np.asarray(pixels, dtype=np.float32)
    if not np.all(np.isfinite(pixels)):
        raise AssetError(f"cannot read {path}: it holds pixels that are not finite numbers")
    return pixels


@lru_cache(maxsize=4)  # a set is up to 7 maps: a few sets is what a scene's objects share
def texture_maps(path: str) -> AssetMaterial:
    """The maps of a texture: an image file (base colour only) or a texture set folder, as an
    AssetMaterial whose factors are 1 (docs/materials.md, "Texture folders"); cached per process.

    A set's roughness and metalness are packed into ``metallic_roughness_texture`` (G, B), a
    missing one of the two filled with roughness 0.5 or metalness 0; a DirectX normal map has its
    G flipped; ``*_Displacement`` becomes the bump map. Every map of a set must have the set's
    size. Raises AssetError naming the set and the map's file."""
    folder = Path(path)
    if not folder.is_dir():
        return AssetMaterial(base_color=(1.0, 1.0, 1.0), texture=texture_image(path))
    maps: dict[str, tuple[Path, np.ndarray]] = {}
    for file in sorted(folder.iterdir()):
        key = _set_map(file) if file.is_file() else None
        if key is None:
            continue  # previews, .mtlx, .usdc and the like beside the maps
        where = f"texture set {folder}: {file.name}"
        if file.suffix.lower() not in IMAGE_SUFFIXES:
            raise AssetError(f"{where}: unknown image format {file.suffix!r}; expected one of {', '.join(IMAGE_SUFFIXES)}")
        if key in maps:
            raise AssetError(f"{where}: a second {key} map (the first is {maps[key][0].name})")
        try:
            pixels = _read_image_file(file, normal=key.startswith("normal"))
        except (OSError, ValueError) as exc:
            raise AssetError(f"{where}: {exc}") from None
        if maps and pixels.shape[:2] != (first := next(iter(maps.values())))[1].shape[:2]:
            raise AssetError(f"{where}: {pixels.shape[1]}x{pixels.shape[0]} pixels, but {first[0].name} has "
                             f"{first[1].shape[1]}x{first[1].shape[0]}; every map of a set must have the same size")
        maps[key] = (file, pixels)
    if "texture" not in maps:
        raise AssetError(f"texture set {folder}: no base colour map (*_Color)")
    if "normal_gl" in maps and "normal_dx" in maps:
        raise AssetError(f"texture set {folder}: both {maps['normal_gl'][0].name} and {maps['normal_dx'][0].name}; "
                         "keep one normal map")
    fields: dict = {"texture": maps["texture"][1]}
    for key in ("opacity_texture", "bump_texture", "occlusion_texture", "emissive_texture"):
        if key in maps:
            fields[key] = maps[key][1]
    if "emissive_texture" in maps:
        fields["emissive"] = (1.0, 1.0, 1.0)
    if "opacity_texture" in maps:  # a set's opacity map cuts its holes (leaves, fences, perforated sheet)
        fields["alpha_mode"] = "MASK"
    if "bump_texture" in maps:
        fields["bump_distance"] = SET_BUMP_DISTANCE
    if "normal_gl" in maps:
        fields["normal_texture"] = maps["normal_gl"][1]
    elif "normal_dx" in maps:  # DirectX's green points down: flip it to OpenGL's +Y
        flipped = maps["normal_dx"][1].copy()
        flipped[..., 1] = 255 - flipped[..., 1]
        fields["normal_texture"] = flipped
    if "roughness" in maps or "metallic" in maps:
        shape = fields["texture"].shape[:2]
        packed = np.full((*shape, 4), 255, dtype=np.uint8)
        packed[..., 1] = maps["roughness"][1][..., 0] if "roughness" in maps else 128
        packed[..., 2] = maps["metallic"][1][..., 0] if "metallic" in maps else 0
        fields.update(metallic_roughness_texture=packed, roughness=1.0, metallic=1.0)
    return AssetMaterial(base_color=(1.0, 1.0, 1.0), **fields)


_MAP_FIELDS = ("texture", "metallic_roughness_texture", "normal_texture", "occlusion_texture", "emissive_texture",
               "bump_texture", "opacity_texture", "transmission_texture", "clearcoat_texture",
               "clearcoat_roughness_texture", "sheen_color_texture", "sheen_roughness_texture")


def with_texture(own: AssetMaterial, texture: AssetMaterial) -> AssetMaterial:
    """An asset's material with a texture's maps (``texture_maps``) in place of all its own, on
    its UVs as they are: roughness and metallic become the texture's when it packs them, the
    emission, bump and (with an opacity map) alpha mode the texture's; other factors stay."""
    changes = {name: getattr(texture, name) for name in _MAP_FIELDS}
    changes.update(base_color=texture.base_color, normal_scale=texture.normal_scale, uv_transform=TextureTransform(),
                   emissive=texture.emissive, emissive_strength=texture.emissive_strength,
                   bump_distance=texture.bump_distance)
    if texture.metallic_roughness_texture is not None:
        changes.update(roughness=texture.roughness, metallic=texture.metallic)
    if texture.opacity_texture is not None:
        changes.update(alpha=texture.alpha, alpha_mode=texture.alpha_mode, alpha_cutoff=texture.alpha_cutoff)
    return replace(own, **changes)


def hue_shifted(linear: np.ndarray | tuple[float, float, float], degrees: float) -> np.ndarray:
    """Linear RGB colours (..., 3) with their hue turned by ``degrees``: HSV of the linear values,
    as Blender's Hue/Saturation node turns the colour it is given."""
    linear = np.asarray(linear, dtype=np.float64)
    high, low = linear.max(axis=-1), linear.min(axis=-1)
    chroma = high - low
    safe = np.where(chroma > 0, chroma, 1.0)
    r, g, b = np.moveaxis(linear, -1, 0)
    hue = np.where(high == r, ((g - b) / safe) % 6, np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = (hue + degrees / 60) % 6  # in sixths of a turn
    # HSV back to RGB: each channel is the value less the share of the chroma its distance from the hue takes.
    share = np.stack([np.clip(np.abs((hue - k + 3) % 6 - 3) - 1, 0, 1) for k in (0, 2, 4)], axis=-1)
    return high[..., None] - chroma[..., None] * share


def hue_shifted_image(pixels: np.ndarray, degrees: float) -> np.ndarray:
    """``hue_shifted`` for every pixel of a uint8 RGBA sRGB image (turned on the linear values, as
    the renderer turns the texture it samples); alpha kept."""
    turned = hue_shifted(srgb_to_linear(pixels[..., :3] / 255.0), degrees)
    return np.concatenate([linear_to_srgb8(turned), pixels[..., 3:]], axis=-1)


def _read_image_file(file: Path, normal: bool = False) -> np.ndarray:
    """An image file as uint8 RGBA (see read_texture), its size checked before it is read."""
    if file.stat().st_size > MAX_ASSET_BYTES:
        raise ValueError(f"{file.stat().st_size} bytes is more than the {MAX_ASSET_BYTES} byte limit")
    return read_texture(file.read_bytes(), normal=normal)


@lru_cache(maxsize=8)
def texture_image(path: str) -> np.ndarray:
    """An image file (one of ``texture_files``) as uint8 RGBA, top row first; cached per process."""
    return read_texture(Path(path).read_bytes())


def read_texture(data: bytes, normal: bool = False) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, TGA, ...) as uint8 RGBA, top row first; the declared size
    is checked before the pixels decode (a ``normal`` map must have three channels)."""
    from PIL import Image

    try:
        checked_image_size(data)
    except ValueError as exc:
        raise AssetError(f"a texture {exc}") from None
    with Image.open(io.BytesIO(data)) as image:
        return _image_array(image, normal=normal, what="normal map" if normal else "texture")


def _read_usd(
    path: Path, variants: Mapping[str, str],
) -> tuple[list[_Part], list[AssetMaterial], float, str, Keypoints]:
    """Compose a USD stage and gather its visible render meshes and their bound materials, and
    its keypoints (stage units and axes; see the module's docstring)."""
    from pxr import Usd, UsdGeom

    stage = Usd.Stage.Open(str(path), Usd.Stage.LoadAll)
    if stage is None:
        raise AssetError("usd-core could not open it")
    root = stage.GetDefaultPrim() or stage.GetPseudoRoot()
    if variants:
        stage.SetEditTarget(stage.GetSessionLayer())  # never edit the shared, cached root layer
        sets = root.GetVariantSets()
        for name, value in variants.items():
            if not sets.HasVariantSet(name):
                known = ", ".join(sets.GetNames()) or "none"
                raise AssetError(f"{root.GetPath()} has no variant set '{name}'; it has: {known}")
            options = sets.GetVariantSet(name).GetVariantNames()
            if value not in options:
                raise AssetError(f"variant set '{name}' has no variant '{value}'; it has: {', '.join(options)}")
            sets.GetVariantSet(name).SetVariantSelection(value)
    if errors := stage.GetCompositionErrors():  # a missing reference or payload, a broken layer
        raise AssetError(f"{errors[0]}" + (f" (and {len(errors) - 1} more composition errors)" if len(errors) > 1 else ""))
    xforms = UsdGeom.XformCache()
    materials: dict[str, int] = {}
    material_list: list[AssetMaterial] = []
    parts = []
    for prim in Usd.PrimRange(root, Usd.TraverseInstanceProxies(Usd.PrimDefaultPredicate)):
        if not prim.IsA(UsdGeom.Mesh):
            continue
        imageable = UsdGeom.Imageable(prim)
        if imageable.ComputeVisibility() == UsdGeom.Tokens.invisible or imageable.ComputePurpose() not in (
            UsdGeom.Tokens.default_, UsdGeom.Tokens.render
        ):
            continue
        world = np.asarray(xforms.GetLocalToWorldTransform(prim), dtype=np.float64)
        part = _usd_mesh(UsdGeom.Mesh(prim), world, materials, material_list)
        if part is not None:
            parts.append(part)
    marks = root.GetChild("keypoints")
    named = [child for child in marks.GetChildren() if child.IsA(UsdGeom.Xformable)] if marks else []
    keypoints = Keypoints(
        tuple(child.GetName() for child in named),
        np.array([np.asarray(xforms.GetLocalToWorldTransform(child))[3, :3] for child in named]).reshape(-1, 3),
    )
    return parts, material_list, UsdGeom.GetStageMetersPerUnit(stage), UsdGeom.GetStageUpAxis(stage), keypoints


def _usd_mesh(mesh, world: np.ndarray, materials: dict[str, int], material_list: list[AssetMaterial]) -> _Part | None:
    """One UsdGeom.Mesh, fan-triangulated, in stage units (USD's row-vector transforms applied)."""
    from pxr import UsdGeom, UsdShade

    points = mesh.GetPointsAttr().Get()
    counts, indices = mesh.GetFaceVertexCountsAttr().Get(), mesh.GetFaceVertexIndicesAttr().Get()
    if points is None or counts is None or indices is None or not len(counts):
        return None
    points, counts, indices = (np.asarray(a) for a in (points, counts, indices))
    where = mesh.GetPath()
    if counts.sum() != len(indices) or (len(indices) and (indices.min() < 0 or indices.max() >= len(points))):
        raise AssetError(f"mesh {where}: face vertex counts and indices do not match its {len(points)} points")
    fans = np.maximum(counts - 2, 0)
    tri_face = np.repeat(np.arange(len(counts)), fans)
    step = np.arange(len(tri_face)) - np.repeat(np.cumsum(fans) - fans, fans)
    start = (np.cumsum(counts) - counts)[tri_face]
    corner = np.stack([start, start + step + 1, start + step + 2], axis=1)  # into the face-vertex list
    left_handed = mesh.GetOrientationAttr().Get() == UsdGeom.Tokens.leftHanded
    if left_handed != (np.linalg.det(world[:3, :3]) < 0):
        corner = corner[:, ::-1]
    positions = points[indices[corner]].reshape(-1, 3) @ world[:3, :3] + world[3, :3]

    def per_corner(primvar) -> np.ndarray | None:
        values = primvar.ComputeFlattened() if primvar and primvar.HasValue() else None
        if values is None or not len(values):
            return None
        values = np.asarray(values, dtype=np.float64)
        interpolation = primvar.GetInterpolation()
        if interpolation == UsdGeom.Tokens.faceVarying and len(values) == len(indices):
            return values[corner].reshape(len(corner) * 3, -1)
        if interpolation in (UsdGeom.Tokens.vertex, UsdGeom.Tokens.varying) and len(values) == len(points):
            return values[indices[corner]].reshape(len(corner) * 3, -1)
        if interpolation == UsdGeom.Tokens.uniform and len(values) == len(counts):
            return np.repeat(values[tri_face], 3, axis=0)
        return np.repeat(values[:1], len(corner) * 3, axis=0)  # constant

    primvars = UsdGeom.PrimvarsAPI(mesh)
    st = primvars.GetPrimvar("st")
    if not (st and st.HasValue()):
        st = next((p for p in primvars.GetPrimvars() if p.GetTypeName().role == "TextureCoordinate"), None)
    uv = per_corner(st) if st else None
    display = per_corner(primvars.GetPrimvar("displayColor"))

    def material_index(prim) -> int:
        bound = UsdShade.MaterialBindingAPI(prim).ComputeBoundMaterial()[0]
        key = str(bound.GetPath()) if bound else f"displayColor {display[0].tolist() if display is not None else None}"
        if key not in materials:
            materials[key] = len(material_list)
            fallback = AssetMaterial() if display is None else AssetMaterial(base_color=tuple(display[0, :3]))
            material_list.append(_usd_material(bound) if bound else fallback)
        return materials[key]

    face_material = np.full(len(counts), material_index(mesh.GetPrim()))
    for subset in UsdGeom.Subset.GetAllGeomSubsets(mesh):
        chosen = np.asarray(subset.GetIndicesAttr().Get() or [], dtype=np.int64)
        if UsdShade.MaterialBindingAPI(subset.GetPrim()).ComputeBoundMaterial()[0] and len(chosen):
            face_material[chosen[chosen < len(counts)]] = material_index(subset.GetPrim())
    return _Part(positions, uv[:, :2] if uv is not None else None, None, face_material[tri_face])


def _usd_material(material) -> AssetMaterial:
    """A UsdPreviewSurface material: its inputs (diffuseColor, roughness, metallic, normal,
    occlusion, emissiveColor, opacity, opacityThreshold, ior, clearcoat, clearcoatRoughness), each
    a constant or a UsdUVTexture (its ``scale`` the factor; the base colour's UsdTransform2d the UV
    transform). Other surfaces are grey."""
    from pxr import UsdShade

    shader = material.ComputeSurfaceSource()[0]
    if not shader or shader.GetIdAttr().Get() != "UsdPreviewSurface":
        return AssetMaterial()
    where = f"material {material.GetPath()}"

    def source(name: str, default):
        """(constant value, (texture shader, output channel name) or None) of an input,
        following connections through node graphs."""
        attribute = shader.GetInput(name)
        producers = attribute.GetValueProducingAttributes() if attribute else []
        if not producers:
            return default, None
        if UsdShade.Output.IsOutput(producers[0]):
            producer = UsdShade.Shader(producers[0].GetPrim())
            if producer.GetIdAttr().Get() != "UsdUVTexture":
                return default, None
            return default, (producer, UsdShade.Output(producers[0]).GetBaseName())
        value = producers[0].Get()
        return (default if value is None else value), None

    fields: dict = {}
    color, texture = source("diffuseColor", (0.18, 0.18, 0.18))  # UsdPreviewSurface's default
    if texture is not None:
        fields["texture"], scale = _usd_texture(texture[0], f"{where} diffuseColor")
        color = scale[:3]
        fields["uv_transform"] = _usd_transform(texture[0])
    fields["base_color"] = tuple(float(c) for c in color)
    roughness, rough_texture = source("roughness", 0.5)
    metallic, metal_texture = source("metallic", 0.0)
    packed = None
    for channel, (value, texture, name) in ((1, (roughness, rough_texture, "roughness")),
                                            (2, (metallic, metal_texture, "metallic"))):
        if texture is not None:
            image, scale = _usd_texture(texture[0], f"{where} {name}")
            taken = _USD_CHANNELS.get(texture[1], 0)
            if packed is None:
                packed = np.full((*image.shape[:2], 4), 255, dtype=np.uint8)
            elif packed.shape[:2] != image.shape[:2]:
                raise AssetError(f"{where} {name}: its {image.shape[1]}x{image.shape[0]} texture differs in size from "
                                 f"the roughness texture ({packed.shape[1]}x{packed.shape[0]}); they are packed together")
            packed[..., channel] = image[..., taken]
            value = scale[taken]
        fields["roughness" if channel == 1 else "metallic"] = _unit(value)
    if packed is not None:
        if rough_texture is None or metal_texture is None:  # the constant one is its factor times a white map
            packed[..., 2 if metal_texture is None else 1] = 255
        fields["metallic_roughness_texture"] = packed
    if (normal := source("normal", None)[1]) is not None:
        fields["normal_texture"], _ = _usd_texture(normal[0], f"{where} normal", normal_map=True)
    if (occlusion := source("occlusion", None)[1]) is not None:
        image, _ = _usd_texture(occlusion[0], f"{where} occlusion")
        fields["occlusion_texture"] = _channel_to_red(image, _USD_CHANNELS.get(occlusion[1], 0))
    emissive, emissive_texture = source("emissiveColor", (0.0, 0.0, 0.0))
    if emissive_texture is not None:
        fields["emissive_texture"], scale = _usd_texture(emissive_texture[0], f"{where} emissiveColor")
        emissive = scale[:3]
    fields["emissive"] = tuple(float(c) for c in emissive)
    opacity, opacity_texture = source("opacity", 1.0)
    if opacity_texture is not None:
        image, scale = _usd_texture(opacity_texture[0], f"{where} opacity")
        taken = _USD_CHANNELS.get(opacity_texture[1], 3)
        fields["opacity_texture"], opacity = _channel_to_red(image, taken), scale[taken]
    threshold = _unit(source("opacityThreshold", 0.0)[0])
    fields["alpha"] = _unit(opacity)
    if threshold > 0:
        fields["alpha_mode"], fields["alpha_cutoff"] = "MASK", threshold
    elif fields["alpha"] < 1 or opacity_texture is not None:
        fields["alpha_mode"] = "BLEND"
    fields["ior"] = float(source("ior", 1.5)[0])
    fields["clearcoat"] = _unit(source("clearcoat", 0.0)[0])
    fields["clearcoat_roughness"] = _unit(source("clearcoatRoughness", 0.01)[0])
    return AssetMaterial(**fields)


_USD_CHANNELS = {"r": 0, "g": 1, "b": 2, "a": 3}


def _channel_to_red(image: np.ndarray, channel: int) -> np.ndarray:
    """One channel of an RGBA image, as the R (and G, B) of an opaque grey image."""
    grey = np.repeat(image[..., channel:channel + 1], 4, axis=-1)
    grey[..., 3] = 255
    return grey


def _usd_texture(texture, where: str, normal_map: bool = False) -> tuple[np.ndarray, tuple[float, ...]]:
    """The image of a UsdUVTexture (uint8 RGBA) and its ``scale`` (RGBA factors, 1 when unset)."""
    from pxr import Ar

    file = texture.GetInput("file").Get() if texture.GetInput("file") else None
    if file is None or not file.resolvedPath:
        raise AssetError(f"{where}: texture {file.path if file else '(none)'} not found")
    asset = Ar.GetResolver().OpenAsset(Ar.ResolvedPath(file.resolvedPath))
    if asset is None or asset.GetSize() > MAX_ASSET_BYTES:
        raise AssetError(f"{where}: cannot read texture {file.resolvedPath}")
    try:
        image = read_texture(asset.GetBuffer(), normal=normal_map)
    except AssetError as exc:
        raise AssetError(f"{where}: {file.path}: {exc}") from None
    scale = texture.GetInput("scale").Get() if texture.GetInput("scale") else None
    return image, (1.0, 1.0, 1.0, 1.0) if scale is None else tuple(float(v) for v in scale)


def _usd_transform(texture) -> TextureTransform:
    """The UsdTransform2d feeding a UsdUVTexture's ``st`` as glTF's transform (glTF's v points down,
    USD's up: see TextureTransform); none: the identity."""
    from pxr import UsdShade

    st = texture.GetInput("st")
    producers = st.GetValueProducingAttributes() if st else []
    if not producers or not UsdShade.Output.IsOutput(producers[0]):
        return TextureTransform()
    node = UsdShade.Shader(producers[0].GetPrim())
    if node.GetIdAttr().Get() != "UsdTransform2d":
        return TextureTransform()

    def value(name: str, default):
        found = node.GetInput(name).Get() if node.GetInput(name) else None
        return default if found is None else found

    (tx, ty), angle, (sx, sy) = value("translation", (0.0, 0.0)), math.radians(value("rotation", 0.0)), value("scale", (1.0, 1.0))
    return TextureTransform(offset=(tx - math.sin(angle) * sy, 1 - ty - math.cos(angle) * sy), rotation=angle,
                            scale=(float(sx), float(sy)))


def _unit(value: float) -> float:
    value = float(value)
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0
