"""SceneForge's triangle mesh: vertices, faces and the few things derived from them that placement,
ray casting and labels use, each computed once (bounds, face normals, an FCL BVH, an Embree scene).

The built-in primitives are made here in numpy, so that sampling, labelling and building a scene
of primitives never import trimesh (with scipy and networkx, about half a second). They have the
vertex positions, vertex order and faces of the meshes SceneForge made with trimesh before
(``tests/test_mesh.py`` compares them), so scenes sampled before read the same.

Rays are cast as before too: Embree (``embreex``, single precision) finds the triangle each ray
hits first, in a copy of the mesh moved to its lowest corner and scaled so its box's diagonal is
100 (single precision has the same relative accuracy at any size); the hit point is then found in
double precision, where the ray meets the triangle's plane. Rays that graze a plane (cosine with
its normal within 1e-5) count as misses.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import fcl

# Two vertices whose coordinates round to the same multiple of 1e-8 m are one vertex.
MERGE_GRID = 1e-8
_MERGE_SCALE = 1e8
GRAZING = 1e-5  # |cos| between a ray and a triangle's normal below which the ray misses it
_EMBREE_SIZE = 100.0  # the diagonal of the mesh's box in the single-precision copy Embree traces
_ONES = np.ones(3)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two (n, 3) arrays."""
    # Summed as trimesh summed them: hit points, hence drop heights in placement, agree to the bit.
    return np.dot(a * b, _ONES)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1; rows of length 1e-13 or less become zeros."""
    length = np.sqrt(_row_dot(vectors, vectors))
    valid = length > 1e-13
    inverse = np.zeros_like(length)
    inverse[valid] = 1.0 / length[valid]
    return vectors * inverse[:, None]


class Mesh:
    """A read-only triangle mesh (float64 vertices, int64 faces, counter-clockwise seen from outside).

    ``face_normals`` may be given where they are known exactly (a box's); otherwise they are the
    normalised cross product of each face's first two edges.
    """

    def __init__(self, vertices: Any, faces: Any, face_normals: np.ndarray | None = None) -> None:
        self.vertices = np.array(vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.array(faces, dtype=np.int64).reshape(-1, 3)
        self.vertices.flags.writeable = False
        self.faces.flags.writeable = False
        self._given_normals = None
        if face_normals is not None:
            self._given_normals = np.array(face_normals, dtype=np.float64)
            self._given_normals.flags.writeable = False
            self.__dict__["face_normals"] = self._given_normals

    def __repr__(self) -> str:
        return f"Mesh({len(self.vertices)} vertices, {len(self.faces)} faces)"

    @cached_property
    def bounds(self) -> np.ndarray:
        """(2, 3) lowest and highest corner of the box around the vertices that faces use."""
        used = self.vertices[np.unique(self.faces)] if len(self.faces) else self.vertices
        if not len(used):
            return np.zeros((2, 3))
        return np.array([used.min(axis=0), used.max(axis=0)])

    @property
    def extents(self) -> np.ndarray:
        """(3,) size of the box around the mesh."""
        return self.bounds[1] - self.bounds[0]

    @property
    def triangles(self) -> np.ndarray:
        """(F, 3, 3) corners of every face."""
        return self.vertices[self.faces]

    @cached_property
    def face_normals(self) -> np.ndarray:
        """(F, 3) unit normals (zeros for degenerate faces)."""
        corners = self.triangles
        normals = _unit_rows(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1]))
        normals.flags.writeable = False
        return normals

    @cached_property
    def is_watertight(self) -> bool:
        """Whether every edge is shared by exactly two faces (a closed surface, with an inside)."""
        if not len(self.faces):
            return False
        edges = np.sort(self.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        return bool(np.all(counts == 2))

    def translated(self, offset: np.ndarray) -> Mesh:
        """A copy moved by ``offset`` (exact normals given to this mesh are kept)."""
        return Mesh(self.vertices + np.asarray(offset, dtype=np.float64), self.faces, self._given_normals)

    @cached_property
    def bvh(self) -> fcl.BVHModel:
        """The mesh as an FCL bounding-volume hierarchy, for collision and distance queries."""
        import fcl

        model = fcl.BVHModel()
        model.beginModel(len(self.faces), len(self.vertices))
        model.addSubModel(self.vertices, self.faces)
        model.endModel()
        return model

    @cached_property
    def _embree(self) -> tuple[Any, np.ndarray, float]:
        """Embree's scene of the mesh in single precision, with the shift and scale that map the
        mesh's coordinates into it."""
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        shift = self.vertices.min(axis=0)
        diagonal = float(np.sqrt(np.sum(self.extents**2)))
        scale = _EMBREE_SIZE / diagonal if diagonal > 0 else 1.0
        scene = rtcore_scene.EmbreeScene()
        TriangleMesh(scene=scene, vertices=((self.vertices - shift) * scale).astype(np.float32),
                     indices=self.faces.astype(np.int32))
        return scene, shift, scale

    def first_hits(self, origins: np.ndarray, directions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where rays first meet the mesh: (hit points (m, 3), index of each hit's ray (m,) in
        increasing order, index of the face hit (m,)). Rays that miss, or graze the face they hit,
        are left out."""
        origins = np.array(origins, dtype=np.float64).reshape(-1, 3)
        directions = _unit_rows(np.array(directions, dtype=np.float64).reshape(-1, 3))
        if not len(origins) or not len(self.faces):
            return np.zeros((0, 3)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        scene, shift, scale = self._embree
        face = scene.run(((origins - shift) * scale).astype(np.float32), directions.astype(np.float32))
        rays = np.flatnonzero(face != -1)
        face = face[rays].astype(np.int64)
        # Where each ray meets the plane of the face Embree found, in double precision.
        normals = self.face_normals[face]
        along = _row_dot(directions[rays], normals)
        meets = np.abs(along) > GRAZING
        rays, face, normals, along = rays[meets], face[meets], normals[meets], along[meets]
        distance = _row_dot(self.vertices[self.faces[face, 0]] - origins[rays], normals) / along
        return directions[rays] * distance[:, None] + origins[rays], rays, face

    def contains(self, points: np.ndarray) -> np.ndarray:
        """(n,) whether each point is inside the mesh (always False unless it is watertight): the
        parity of the faces a ray from the point crosses, agreed by two opposite rays. Points on the
        surface may go either way."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        inside = np.zeros(len(points), dtype=bool)
        if not self.is_watertight:
            return inside
        low, high = self.bounds
        for index in np.flatnonzero(np.all((points >= low) & (points <= high), axis=1)):
            for direction in _PARITY_DIRECTIONS:
                ahead, behind = (self._crossings(points[index], sign * direction) % 2 for sign in (1.0, -1.0))
                if ahead == behind:
                    inside[index] = bool(ahead)
                    break
        return inside

    @cached_property
    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each face's first corner and its two edges from it, as (3, F) coordinate rows."""
        corners = self.triangles
        return corners[:, 0].T.copy(), (corners[:, 1] - corners[:, 0]).T.copy(), (corners[:, 2] - corners[:, 0]).T.copy()

    def _crossings(self, origin: np.ndarray, direction: np.ndarray) -> int:
        """How many faces the ray from ``origin`` along ``direction`` crosses (Moller-Trumbore, in
        double precision)."""
        (ax, ay, az), (ex, ey, ez), (fx, fy, fz) = self._edges
        dx, dy, dz = direction
        px, py, pz = dy * fz - dz * fy, dz * fx - dx * fz, dx * fy - dy * fx  # direction x edge 2
        det = ex * px + ey * py + ez * pz
        ok = np.abs(det) > 1e-18
        det = np.where(ok, det, 1.0)
        tx, ty, tz = origin[0] - ax, origin[1] - ay, origin[2] - az
        u = (tx * px + ty * py + tz * pz) / det
        qx, qy, qz = ty * ez - tz * ey, tz * ex - tx * ez, tx * ey - ty * ex  # (origin - corner) x edge 1
        v = (dx * qx + dy * qy + dz * qz) / det
        t = (fx * qx + fy * qy + fz * qz) / det
        return int(np.count_nonzero(ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)))


# Directions of the rays of the inside test, none along an axis or a primitive's symmetry plane.
_PARITY_DIRECTIONS = _unit_rows(np.array([[0.43, 0.62, 0.65], [-0.71, 0.23, 0.66], [0.29, -0.83, 0.47]]))


def connected_components(count: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    """Components of the undirected graph of ``count`` nodes and edges ``a[i]``-``b[i]``: their
    number and each node's component, numbered in the order of their lowest node."""
    label = np.arange(count)  # each node's parent; always a lower node, so chains end at roots
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    while True:
        high, low = np.maximum(label[a], label[b]), np.minimum(label[a], label[b])
        apart = high != low
        if not apart.any():
            break
        # Roots joined by an edge: the higher hangs under the lowest, then every node under its root.
        np.minimum.at(label, high[apart], low[apart])
        while not np.array_equal(root := label[label], label):
            label = root
    roots, component = np.unique(label, return_inverse=True)
    return len(roots), component.reshape(-1)


def merged(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """A mesh with the vertices that faces use, those on one ``MERGE_GRID`` point made one (the
    first of them kept, in order of first appearance)."""
    used = np.zeros(len(vertices), dtype=bool)
    used[faces] = True
    kept = np.flatnonzero(used)
    keys = np.round(vertices[kept] * _MERGE_SCALE).astype(np.int64)
    _, first, group = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # groups in order of their first vertex
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    remap = np.zeros(len(vertices), dtype=np.int64)
    remap[kept] = rank[group.reshape(-1)]
    return Mesh(vertices[kept[first[order]]], remap[faces])


# ---- primitives: centred on the origin, axis along Z -------------------------------------------------

# The unit box's corners: bit 2 of the index is x, bit 1 y, bit 0 z; two faces per side, wound
# outwards, with their exact normals.
_BOX_CORNERS = np.array([[(i >> 2) & 1, (i >> 1) & 1, i & 1] for i in range(8)], dtype=np.float64)
_BOX_FACES = np.array([[1, 3, 0], [4, 1, 0], [0, 3, 2], [2, 4, 0], [1, 7, 3], [5, 1, 4],
                       [5, 7, 1], [3, 7, 2], [6, 4, 2], [2, 7, 6], [6, 5, 4], [7, 5, 6]])
_BOX_NORMALS = np.array([[-1, 0, 0], [0, -1, 0], [-1, 0, 0], [0, 0, -1], [0, 0, 1], [0, -1, 0],
                         [0, 0, 1], [0, 1, 0], [0, 0, -1], [0, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=np.float64)


def box(extents: Any) -> Mesh:
    """A box of the given (3,) side lengths."""
    return Mesh((_BOX_CORNERS - 0.5) * np.asarray(extents, dtype=np.float64), _BOX_FACES, _BOX_NORMALS)


# The regular icosahedron on the unit sphere: its vertices are the cyclic permutations of
# (0, +-a, +-b), a = 1 / sqrt(1 + phi^2), b = phi a (values as commonly published, to 14-16 digits).
_A, _B = 0.5257311121191336, 0.85065080835204
_ICOSAHEDRON = np.array([[-_A, _B, 0], [_A, _B, 0], [-_A, -_B, 0], [_A, -_B, 0], [0, -_A, _B], [0, _A, _B],
                         [0, -_A, -_B], [0, _A, -_B], [_B, 0, -_A], [_B, 0, _A], [-_B, 0, -_A], [-_B, 0, _A]])
_ICOSAHEDRON_FACES = np.array([
    [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
    [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
    [8, 6, 7], [9, 8, 1]])


def icosphere(subdivisions: int, radius: float) -> Mesh:
    """A sphere: the icosahedron, each triangle split in four ``subdivisions`` times, every vertex
    moved onto the sphere after each split."""
    vertices, faces = _ICOSAHEDRON.copy(), _ICOSAHEDRON_FACES.copy()
    for _ in range(subdivisions):
        # One new vertex at the middle of each edge; edges numbered by (higher, lower) end.
        edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
        key = edges[:, 1] * len(vertices) + edges[:, 0]
        unique, first, middle = np.unique(key, return_index=True, return_inverse=True)
        ends = edges[first]
        vertices = np.vstack([vertices, (vertices[ends[:, 0]] + vertices[ends[:, 1]]) / 2])
        m = middle.reshape(-1, 3) + len(vertices) - len(unique)  # mid-edge vertices 01, 12, 20
        faces = np.stack([faces[:, 0], m[:, 0], m[:, 2], m[:, 0], faces[:, 1], m[:, 1],
                          m[:, 2], m[:, 1], faces[:, 2], m[:, 0], m[:, 1], m[:, 2]], axis=1).reshape(-1, 3)
        length = np.sqrt(_row_dot(vertices, vertices))
        vertices = vertices + vertices / length[:, None] * (radius - length)[:, None]
    return Mesh(vertices, faces)


def _revolved(profile: np.ndarray, sections: int) -> Mesh:
    """The surface swept by a (radius, z) profile turned once about Z in ``sections`` steps;
    vertices on one point (the axis, a closed profile's ends) merged."""
    angles = np.linspace(0.0, 2 * np.pi, sections + 1)
    radius, height = profile[:, 0], profile[:, 1]
    per = len(profile)
    vertices = np.column_stack([
        (np.cos(angles)[:, None] * radius).reshape(-1), (np.sin(angles)[:, None] * radius).reshape(-1),
        np.tile(height, len(angles)),
    ])[:-per]  # the last step is the first again
    # Two triangles per profile segment of one step; those of no area (on the axis) left out.
    k = np.arange(per - 1)[:, None]
    strip = (np.array([0, per, 1, 1, per, per + 1]) + k).reshape(-1, 3)
    corners = vertices[strip]
    area = np.sqrt(np.sum(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1]) ** 2, axis=1)) / 2
    strip = strip[area > MERGE_GRID]
    faces = (strip[None] + (np.arange(sections) * per)[:, None, None]).reshape(-1, 3) % len(vertices)
    return merged(vertices, faces)


def cylinder(radius: float, height: float, sections: int) -> Mesh:
    """A closed cylinder."""
    half = abs(float(height)) / 2.0
    return _revolved(np.array([[0, -half], [radius, -half], [radius, half], [0, half]], dtype=np.float64), sections)


def cone(radius: float, height: float, sections: int) -> Mesh:
    """A closed cone, its base at z = 0 and its apex at z = ``height``."""
    return _revolved(np.array([[0, 0], [radius, 0], [0, height]], dtype=np.float64), sections)


def capsule(straight: float, radius: float, count: tuple[int, int]) -> Mesh:
    """A cylinder of length ``straight`` capped by two hemispheres; ``count`` = (steps from pole
    to pole, steps around), each rounded up to even."""
    latitude, around = (n + n % 2 for n in count)
    theta = np.concatenate([np.linspace(-np.pi / 2.0, 0.0, latitude // 2 + 1), np.linspace(0.0, np.pi / 2.0, latitude // 2 + 1)])
    profile = np.column_stack([np.cos(theta), np.sin(theta)]) * abs(float(radius))
    half = len(profile) // 2
    profile[:half, 1] -= abs(float(straight)) / 2.0
    profile[half:, 1] += abs(float(straight)) / 2.0
    return _revolved(profile, around)


def torus(major_radius: float, minor_radius: float, major_sections: int, minor_sections: int) -> Mesh:
    """A torus about Z: a tube of ``minor_radius`` around a circle of ``major_radius``."""
    phi = np.linspace(0, 2 * np.pi, minor_sections + 1)
    profile = np.column_stack([minor_radius * np.cos(phi), minor_radius * np.sin(phi)]) + [major_radius, 0]
    return _revolved(profile, major_sections)
