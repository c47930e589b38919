"""SceneForge's mesh type (scenes/mesh.py): primitives, ray casting, inside tests and FCL models,
checked against analytic geometry, and the primitives against trimesh's (which built them before)."""

from __future__ import annotations

import fcl
import numpy as np
import pytest
import trimesh

from sceneforge.scenes import mesh as M

SIZES = [(0.12, 0.3), (0.031, 0.0874), (1.7, 0.45)]


@pytest.mark.parametrize(("r", "h"), SIZES)
def test_primitives_are_trimesh_s_bit_for_bit(r, h):
    """Scenes sampled before (with trimesh's primitives) must read the same: positions, vertex and
    face order and face normals are identical."""
    pairs = [
        (M.box([r, h, r + h]), trimesh.creation.box(extents=[r, h, r + h])),
        (M.icosphere(4, r), trimesh.creation.icosphere(subdivisions=4, radius=r)),
        (M.cylinder(r, h, 48), trimesh.creation.cylinder(radius=r, height=h, sections=48)),
        (M.cone(r, h, 48), trimesh.creation.cone(radius=r, height=h, sections=48)),
        (M.capsule(h, r, (24, 24)), trimesh.creation.capsule(height=h, radius=r, count=[24, 24])),
        (M.capsule(0.0, r, (24, 24)), trimesh.creation.capsule(height=0.0, radius=r, count=[24, 24])),
        (M.torus(h, r / 3, 48, 24), trimesh.creation.torus(h, r / 3, major_sections=48, minor_sections=24)),
    ]
    for ours, theirs in pairs:
        assert np.array_equal(ours.vertices, theirs.vertices)
        assert np.array_equal(ours.faces, theirs.faces)
        assert np.array_equal(ours.face_normals, theirs.face_normals)
        assert ours.is_watertight and theirs.is_watertight
        assert np.array_equal(ours.bounds, theirs.bounds)


def test_box_ray_hits_are_exact():
    rng = np.random.default_rng(3)
    half = np.array([0.2, 0.35, 0.05])
    box = M.box(2 * half)
    # Rays from far out along -z onto the top face, at random points of it, slanted.
    targets = np.column_stack([rng.uniform(-half[0], half[0], 200) * 0.99, rng.uniform(-half[1], half[1], 200) * 0.99,
                               np.full(200, half[2])])
    directions = np.column_stack([rng.uniform(-0.3, 0.3, (200, 2)), -np.ones(200)])
    origins = targets - 3.0 * directions
    points, rays, faces = box.first_hits(origins, directions)
    assert np.array_equal(rays, np.arange(200))
    np.testing.assert_allclose(points, targets, rtol=0, atol=1e-12)
    assert np.all(np.abs(box.face_normals[faces] - [0, 0, 1]).sum(axis=1) == 0)
    # Rays that pass beside it, and one that runs along its top face's plane, miss.
    beside = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.05]])
    _, rays, _ = box.first_hits(beside + [0, 0, 1.0], [[0, 0, -1.0], [1.0, 0, 0]])
    assert len(rays) == 0


def test_sphere_ray_hits_lie_between_its_inscribed_and_circumscribed_spheres():
    rng = np.random.default_rng(4)
    radius = 0.3
    sphere = M.icosphere(4, radius)
    # The faces' distance from the centre: no hit can come nearer to it.
    centres = sphere.triangles.mean(axis=1)
    inner = float(np.min(np.abs(np.sum(centres * sphere.face_normals, axis=1))))
    assert radius * 0.995 < inner < radius
    aim = rng.normal(size=(500, 3))
    aim *= rng.uniform(0, 0.25, (500, 1)) / np.linalg.norm(aim, axis=1, keepdims=True)  # within 0.25 of the centre
    origins = rng.normal(size=(500, 3))
    origins = origins / np.linalg.norm(origins, axis=1, keepdims=True) * 2.0
    directions = aim - origins
    points, rays, _ = sphere.first_hits(origins, directions)
    # Rays passing nearer the centre than every face all hit, on the near side.
    assert np.array_equal(rays, np.arange(500))
    distance = np.linalg.norm(points, axis=1)
    assert np.all(distance <= radius * (1 + 1e-12)) and np.all(distance >= inner * (1 - 1e-12))
    along = np.sum((points - origins) * directions, axis=1)
    assert np.all(along > 0)
    # The first hit: the point of the exact sphere where the ray enters lies just beyond it.
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    b = np.sum(origins * unit, axis=1)
    entry = -b - np.sqrt(b**2 - (np.sum(origins**2, axis=1) - radius**2))
    np.testing.assert_allclose(np.linalg.norm(points - origins, axis=1), entry, rtol=0, atol=radius * 0.01)


@pytest.mark.parametrize("primitive", ["box", "sphere", "torus", "capsule"])
def test_ray_hits_agree_with_trimesh(primitive):
    """The hits of the former ray caster (trimesh over Embree) to 1e-9 of the mesh's size."""
    rng = np.random.default_rng(5)
    mesh = {"box": M.box([0.1, 0.2, 0.3]), "sphere": M.icosphere(4, 0.07), "torus": M.torus(0.1, 0.03, 48, 24),
            "capsule": M.capsule(0.1, 0.04, (24, 24))}[primitive]
    theirs = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    origins = rng.normal(size=(2000, 3)) * 0.4
    directions = rng.normal(size=(2000, 3)) * 0.05 - origins
    points, rays, faces = mesh.first_hits(origins, directions)
    t_points, t_rays, t_faces = theirs.ray.intersects_location(origins, directions, multiple_hits=False)
    assert len(rays) > 200
    assert np.array_equal(rays, t_rays) and np.array_equal(faces, t_faces)
    np.testing.assert_allclose(points, t_points, rtol=0, atol=1e-9)


def test_inside_test():
    box = M.box([0.2, 0.4, 0.6])
    assert list(box.contains([[0, 0, 0], [0.09, 0.19, 0.29], [0.11, 0, 0], [0, 0, -0.31], [5, 5, 5]])) == \
        [True, True, False, False, False]
    ring = M.torus(0.1, 0.03, 48, 24)
    assert list(ring.contains([[0, 0, 0], [0.1, 0, 0], [0, -0.1, 0.01], [0.1, 0, 0.04]])) == [False, True, True, False]
    quad = M.Mesh([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    assert not quad.is_watertight and not quad.contains([[0, 0, 0]])[0]


@pytest.mark.parametrize("gap", [0.5, 0.01, 1e-4])
def test_fcl_models_of_two_boxes(gap):
    """Two unit boxes side by side along x, ``gap`` apart (touching or overlapping when negative)."""
    box = M.box([1.0, 1.0, 1.0])
    a = fcl.CollisionObject(box.bvh, fcl.Transform(np.eye(3), np.zeros(3)))
    turned = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z: same extents
    for offset, collide in ((1.0 + gap, False), (1.0 - gap, True)):
        b = fcl.CollisionObject(box.bvh, fcl.Transform(turned, np.array([offset, 0.3, 0.2])))
        assert fcl.collide(a, b, fcl.CollisionRequest(), fcl.CollisionResult()) == collide
        if not collide:
            distance = fcl.distance(a, b, fcl.DistanceRequest(), fcl.DistanceResult())
            assert distance == pytest.approx(gap, rel=1e-9, abs=1e-12)


def test_connected_components_match_a_breadth_first_search():
    rng = np.random.default_rng(6)
    for count, edges in ((1, 0), (12, 4), (300, 200), (300, 600)):
        a, b = rng.integers(0, count, edges), rng.integers(0, count, edges)
        expected, seen = np.full(count, -1), 0
        neighbours = [[] for _ in range(count)]
        for x, y in zip(a, b):
            neighbours[x].append(y)
            neighbours[y].append(x)
        for start in range(count):  # components numbered in the order of their lowest node
            if expected[start] < 0:
                expected[start], queue = seen, [start]
                while queue:
                    for other in neighbours[queue.pop()]:
                        if expected[other] < 0:
                            expected[other] = seen
                            queue.append(other)
                seen += 1
        number, component = M.connected_components(count, a, b)
        assert number == seen and np.array_equal(component, expected)
