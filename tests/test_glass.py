"""Glass and alpha cut-outs: every label against geometry computed here by hand.

A glass sphere (transmission 1, roughness 0), an alpha-cut card (a thin box with a window
pattern, alpha mode MASK, from an opacity image or the base texture's alpha) and blended cards
(BLEND, alpha 0.1 and 0.7) stand, one per scene, on a ground plane z = 0 in front of an opaque
labeled cube, seen from a known pose. Labels take the glass surface, the blended cards and the
card's opaque parts, and what is seen through the card's holes; the behind pass takes what glass
and blended cards hide.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from sceneforge.floor.errors import UserError
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_specs
from sceneforge.scenes.recipe import RenderSettings, load_recipe
from sceneforge.scenes.sampling import look_at, sample
from sceneforge.scenes.spec import AssetRef, CameraSpec, GroundSpec, LightSpec, MaterialSpec, ObjectSpec, RenderSpec, SceneSpec

from .helpers import run_cli, write_recipe

W, H = 64, 48
F = (W / 2) / math.tan(math.radians(17))
K = np.array([[F, 0, (W - 1) / 2], [0, F, (H - 1) / 2], [0, 0, 1]])
EYE = np.array([0.0, -1.3, 0.55])
WORLD_FROM_CAMERA = look_at(EYE, np.array([0.0, 0.0, 0.15]))
CAMERA_FROM_WORLD = np.linalg.inv(WORLD_FROM_CAMERA)
GLASS = MaterialSpec(base_color=(1.0, 1.0, 1.0), roughness=0.0, metallic=0.0, transmission=1.0, ior=1.45)
GREY = MaterialSpec(base_color=(0.5, 0.5, 0.5), roughness=0.6)
SPHERE_RADIUS, SPHERE_CENTRE = 0.12, np.array([0.0, 0.0, 0.12])
CUBE_LOW, CUBE_HIGH = np.array([-0.05, 0.3, 0.0]), np.array([0.35, 0.7, 0.4])  # behind both, to the right
CARD = np.array([0.4, 0.01, 0.4])  # a thin box standing at the origin, facing the camera (-Y)
BLEND_ALPHAS = (0.1, 0.7)  # blended cards, faint and strong
TILE = 0.2  # metres per copy of the opacity image: holes where both x and z are in the middle half of a copy


def _object(instance_id: int, asset: AssetRef, bottom_centre, material: MaterialSpec) -> ObjectSpec:
    pose = np.eye(4)
    pose[:3, 3] = bottom_centre
    return ObjectSpec(instance_id=instance_id, category_id=instance_id, category=f"c{instance_id}", asset=asset,
                      world_from_object=tuple(map(tuple, pose)), material=material)


def _cube() -> ObjectSpec:
    extents = tuple(float(e) for e in CUBE_HIGH - CUBE_LOW)
    return _object(2, AssetRef.primitive_asset("box", {"extents": extents}),
                   ((CUBE_LOW[0] + CUBE_HIGH[0]) / 2, (CUBE_LOW[1] + CUBE_HIGH[1]) / 2, 0.0), GREY)


def _scene(index: int, first: ObjectSpec) -> SceneSpec:
    camera = CameraSpec(K=tuple(map(tuple, K)), world_from_camera=tuple(map(tuple, WORLD_FROM_CAMERA)),
                        width=W, height=H, clip_start=0.01, clip_end=100.0)
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, np.diag([1.0, -1, -1, 1]))),
                    size=0.5)
    settings = RenderSettings(samples=8, behind=True).model_dump(exclude={"resolution"})
    return SceneSpec(index=index, scene_index=index, seed=index, camera=camera, objects=[first, _cube()], lights=[sun],
                     ground=GroundSpec(size=20.0, material=GREY), background_color=(0.3, 0.3, 0.3),
                     background_strength=1.0, render=RenderSpec(**settings, noise_seed=index))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    folder = tmp_path_factory.mktemp("glass")
    # A 16 x 16 opacity image: an opaque frame 4 texels wide around an 8 x 8 hole (symmetric, so
    # however box projection orients it the holes are the same; bilinear filtering rounds the
    # hole's corners by less than half a texel).
    window = np.full((16, 16), 255, np.uint8)
    window[4:12, 4:12] = 0
    Image.fromarray(window).save(folder / "window.png")
    card_material = MaterialSpec(base_color=(0.8, 0.3, 0.2), roughness=0.5, alpha_mode="MASK",
                                 opacity_texture=str(folder / "window.png"), texture_size=TILE)
    # The same window as the alpha of a base colour texture (glTF's way): no opacity image.
    Image.fromarray(np.dstack([np.full((16, 16, 3), 200, np.uint8), window])).save(folder / "window_rgba.png")
    textured_card = MaterialSpec(texture=str(folder / "window_rgba.png"), alpha_mode="MASK", texture_size=TILE)
    specs = [
        _scene(0, _object(1, AssetRef.primitive_asset("sphere", {"radius": SPHERE_RADIUS}), (0.0, 0.0, 0.0), GLASS)),
        _scene(1, _object(1, AssetRef.primitive_asset("box", {"extents": tuple(CARD)}), (0.0, 0.0, 0.0), card_material)),
        *(_scene(2 + k, _object(1, AssetRef.primitive_asset("box", {"extents": tuple(CARD)}), (0.0, 0.0, 0.0),
                                MaterialSpec(base_color=(0.2, 0.3, 0.8), alpha=alpha, alpha_mode="BLEND")))
          for k, alpha in enumerate(BLEND_ALPHAS)),
        _scene(4, _object(1, AssetRef.primitive_asset("box", {"extents": tuple(CARD)}), (0.0, 0.0, 0.0), textured_card)),
    ]
    store = DatasetStore.open_for_writing(folder / "out", recipe={}, recipe_hash="glass", categories=["c1", "c2"],
                                          resolution=(W, H), requested=len(specs), behind=True)
    render_specs(store, specs)
    return store, {r["index"]: r for r in store.records()}


def rays(offset=(0.0, 0.0)) -> np.ndarray:
    """World-frame rays (camera z = 1) through every pixel centre, shifted by ``offset`` pixels."""
    u, v = np.meshgrid(np.arange(W) + offset[0], np.arange(H) + offset[1])
    camera = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T
    return camera @ WORLD_FROM_CAMERA[:3, :3].T


def sphere_hit(d: np.ndarray) -> np.ndarray:
    """Ray parameter (= planar depth) of the first hit on the sphere, inf = miss."""
    o = EYE - SPHERE_CENTRE
    a, b, c = np.einsum("...i,...i", d, d), d @ o, o @ o - SPHERE_RADIUS**2
    disc = b * b - a * c
    return np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)


def box_hit(d: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Slab test: ray parameter of the entry into an axis-aligned box, inf = miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (low - EYE) / d, (high - EYE) / d
    near, far = np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)
    return np.where((near <= far) & (far > 0), near, np.inf)


def plane_hit(d: np.ndarray) -> np.ndarray:
    t = -EYE[2] / d[..., 2]
    return np.where(t > 0, t, np.inf)


def behind_glass(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and instance of what lies behind the glass: the cube (id 2) or the plane (id 0)."""
    cube, plane = box_hit(d, CUBE_LOW, CUBE_HIGH), plane_hit(d)
    return np.minimum(cube, plane), np.where(cube < plane, 2, 0)


def card_truth(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and instance along each ray: the card's front face where opaque, else what is behind."""
    t = (-CARD[1] / 2 - EYE[1]) / d[..., 1]
    x, z = EYE[0] + t * d[..., 0], EYE[2] + t * d[..., 2]
    on_card = (np.abs(x) < CARD[0] / 2) & (z > 0) & (z < CARD[2])
    hole = (np.abs(np.mod(x / TILE, 1) - 0.5) < 0.25) & (np.abs(np.mod(z / TILE, 1) - 0.5) < 0.25)
    opaque = on_card & ~hole
    depth, instance = behind_glass(d)
    return np.where(opaque, t, depth), np.where(opaque, 1, instance)


def away_from_edges(truth, reach: float = 0.75) -> np.ndarray:
    """Pixels whose instance is the same at the centre and ``reach`` px around it (not on an edge)."""
    centre = truth(rays())[1]
    same = np.ones((H, W), bool)
    for offset in ((-reach, 0), (reach, 0), (0, -reach), (0, reach), (reach, reach), (-reach, -reach)):
        same &= truth(rays(offset))[1] == centre
    return same


def camera_normals(world: np.ndarray) -> np.ndarray:
    return world @ CAMERA_FROM_WORLD[:3, :3].T


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.einsum("...i,...i", a, b), -1, 1)))


def glass_truth(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sphere = sphere_hit(d)
    depth, instance = behind_glass(d)
    return np.where(np.isfinite(sphere), sphere, depth), np.where(np.isfinite(sphere), 1, instance)


def test_glass_sphere_mask_depth_and_normals_are_the_glass_surface(rendered):
    store, records = rendered
    record, d = records[0], rays()
    instance, depth, normals = store.read_instance(record), store.read_depth(record), store.read_normals(record)
    expected_depth, expected_instance = glass_truth(d)
    safe = away_from_edges(glass_truth)
    sphere = expected_instance == 1
    assert sphere.sum() > 150 and (safe & (expected_instance == 2)).sum() > 50, "the test sees the sphere and the cube"
    assert np.array_equal(instance[safe], expected_instance[safe])  # the mask is the projected sphere
    assert ((instance == 1) ^ sphere).sum() <= 0.06 * sphere.sum()  # edge pixels differ at most
    t = sphere_hit(d)
    points = EYE + np.where(np.isfinite(t), t, 0.0)[..., None] * d  # misses are never compared
    expected_normals = camera_normals((points - SPHERE_CENTRE) / SPHERE_RADIUS)
    unit = d / np.linalg.norm(d, axis=-1, keepdims=True)
    facing = safe & sphere & (-np.einsum("...i,...i", (points - SPHERE_CENTRE) / SPHERE_RADIUS, unit) > 0.3)
    assert facing.sum() > 100
    assert np.abs(depth[facing] - t[facing]).max() <= 1e-3  # an icosphere, not a sphere
    angles = angle_deg(normals[facing], expected_normals[facing])
    # Normals average the jittered samples of a pixel, which spans about 6 degrees of this sphere.
    assert np.median(angles) <= 1.0 and angles.max() <= 4.0
    opaque = safe & ~sphere
    assert np.allclose(depth[opaque], expected_depth[opaque], rtol=1e-4)


def test_behind_pass_sees_through_the_glass_only(rendered):
    store, records = rendered
    record = records[0]
    assert record["files"]["depth_behind"] and "depth_behind" in store.meta["passes"]
    behind_depth, behind_instance = store.read_pass(record, "depth_behind"), store.read_pass(record, "instance_behind")
    assert behind_depth.dtype == np.float32 and behind_instance.dtype == np.uint16
    expected_depth, expected_instance = behind_glass(rays())
    safe = away_from_edges(lambda d: behind_glass(d)) & away_from_edges(glass_truth)
    sphere = glass_truth(rays())[1] == 1
    seen = safe & sphere
    assert (seen & (expected_instance == 2)).sum() > 20 and (seen & (expected_instance == 0)).sum() > 20
    assert np.array_equal(behind_instance[safe], expected_instance[safe])
    assert np.allclose(behind_depth[safe], expected_depth[safe], rtol=1e-4)
    # Where no glass is in the way the behind pass is the frame's own labels.
    depth, instance = store.read_depth(record), store.read_instance(record)
    assert np.array_equal(behind_instance[~sphere & safe], instance[~sphere & safe])
    assert np.array_equal(behind_depth[~sphere & safe], depth[~sphere & safe])


@pytest.mark.parametrize("index", [1, 4], ids=["opacity image", "base texture alpha"])
def test_alpha_cut_card_labels_only_its_opaque_pixels(rendered, index):
    store, records = rendered
    record, d = records[index], rays()
    instance, depth, normals = store.read_instance(record), store.read_depth(record), store.read_normals(record)
    expected_depth, expected_instance = card_truth(d)
    safe = away_from_edges(card_truth)
    card = safe & (expected_instance == 1)
    holes = safe & (expected_instance != 1) & (np.abs(rays()[..., 0] * ((-CARD[1] / 2 - EYE[1]) / d[..., 1])) < 0.2)
    assert card.sum() > 100 and (holes & (expected_instance == 2)).sum() > 5 and (holes & (expected_instance == 0)).sum() > 5
    assert np.array_equal(instance[safe], expected_instance[safe])
    assert np.allclose(depth[safe], expected_depth[safe], rtol=1e-4)
    # Normals average every sample of a pixel, and Cycles' pixel filter reaches 1.5 px.
    card &= away_from_edges(card_truth, 1.5)
    assert angle_deg(normals[card], camera_normals(np.array([0.0, -1.0, 0.0]))).max() <= 0.5
    # The card is opaque: the behind pass shows it as the frame does.
    assert np.array_equal(store.read_pass(record, "instance_behind"), instance)
    (card_record,) = [o for o in record["objects"] if o["instance_id"] == 1]
    assert card_record["visible_pixels"] == (instance == 1).sum()
    # The amodal mask is ray-cast against the mesh, which has no holes (docs/formats.md): the
    # card's whole outline, so an unoccluded card with holes has visibility below 1.
    outline = solid_card_truth(d)[1] == 1
    assert abs(card_record["unoccluded_pixels"] - outline.sum()) <= 0.05 * outline.sum()
    assert card_record["visibility"] == pytest.approx(card_record["visible_pixels"] / card_record["unoccluded_pixels"])
    assert card_record["visibility"] < 0.9


def solid_card_truth(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The card without holes in front of what is behind it."""
    t = (-CARD[1] / 2 - EYE[1]) / d[..., 1]
    x, z = EYE[0] + t * d[..., 0], EYE[2] + t * d[..., 2]
    on_card = (np.abs(x) < CARD[0] / 2) & (z > 0) & (z < CARD[2])
    depth, instance = behind_glass(d)
    return np.where(on_card, t, depth), np.where(on_card, 1, instance)


@pytest.mark.parametrize("k", range(len(BLEND_ALPHAS)))
def test_blended_card_owns_its_pixels_and_the_behind_pass_sees_through_it(rendered, k):
    """A blended surface labels every pixel where it is not wholly transparent (its front face,
    whatever its alpha); the behind pass shows what it covers."""
    store, records = rendered
    record, d = records[2 + k], rays()
    card_depth, card_instance = solid_card_truth(d)
    behind_depth, behind_instance = behind_glass(d)
    safe = away_from_edges(solid_card_truth) & away_from_edges(lambda d: behind_glass(d))
    assert (safe & (card_instance == 1)).sum() > 300 and (safe & (card_instance != behind_instance)).sum() > 300
    assert np.array_equal(store.read_instance(record)[safe], card_instance[safe])
    assert np.allclose(store.read_depth(record)[safe], card_depth[safe], rtol=1e-4)
    assert np.array_equal(store.read_pass(record, "instance_behind")[safe], behind_instance[safe])
    assert np.allclose(store.read_pass(record, "depth_behind")[safe], behind_depth[safe], rtol=1e-4)



GLASS_RECIPE = """\
seed: 5
count: 4
render: {resolution: [48, 36], samples: 1}
objects:
  - category: bottle
    count: 3
    asset: {primitive: capsule, radius: 0.03, height: 0.2}
    material: {color: [0.9, 1, 0.9], roughness: 0.1%s}
ground: {size: 2, material: {color: [0.5, 0.5, 0.5]%s}}
"""


def test_transparency_fields_draw_per_object_and_change_nothing_else(tmp_path):
    plain = load_recipe(write_recipe(tmp_path, GLASS_RECIPE % ("", ""), "plain.yaml"))
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "holes.png")
    glass = load_recipe(write_recipe(tmp_path, GLASS_RECIPE % (
        ", transmission: {uniform: [0.5, 1]}, ior: {uniform: [1.3, 1.6]}",
        ", opacity_texture: holes.png, alpha: 0.9"), "glass.yaml"))
    for index in range(plain.count):
        a, b = sample(plain, index), sample(glass, index)
        assert [o.world_from_object for o in a.objects] == [o.world_from_object for o in b.objects]
        assert a.camera == b.camera and [o.material.base_color for o in a.objects] == [o.material.base_color for o in b.objects]
        transmissions = [o.material.transmission for o in b.objects]
        assert all(0.5 <= t <= 1 for t in transmissions) and len(set(transmissions)) == len(transmissions)
        assert all(1.3 <= o.material.ior <= 1.6 for o in b.objects)
        assert all(o.material.alpha_mode is None and o.material.transmission is None for o in a.objects)
        ground = b.ground.material
        assert (ground.alpha_mode, ground.alpha, ground.opacity_texture) == ("MASK", 0.9, str(tmp_path / "holes.png"))


def test_opacity_texture_from_a_folder_or_choice_draws_per_object_and_per_scene(tmp_path):
    """A folder: each object takes one of its images; a choice: one option per scene (stream
    (16, 4, k)), the object's image from (16, 5, k); nothing else of the scene changes."""
    for folder, names in (("cards", ("a.png", "b.png", "c.png")), ("fences", ("d.png",))):
        (tmp_path / folder).mkdir()
        for name in names:
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / folder / name)
    single = load_recipe(write_recipe(tmp_path, GLASS_RECIPE % (", opacity_texture: fences/d.png", ""), "single.yaml"))
    folder = load_recipe(write_recipe(tmp_path, GLASS_RECIPE % (", opacity_texture: cards", ""), "folder.yaml"))
    choice = load_recipe(write_recipe(tmp_path, GLASS_RECIPE.replace("count: 4", "count: 12") % (
        ", opacity_texture: {choice: [cards, fences], weights: [1, 1]}", ""), "choice.yaml"))
    drawn, options = [], []
    for index in range(choice.count):
        a, c = sample(single, index % single.count), sample(choice, index)
        if index < folder.count:
            b = sample(folder, index)
            assert [o.world_from_object for o in a.objects] == [o.world_from_object for o in b.objects]
            assert [o.material.base_color for o in a.objects] == [o.material.base_color for o in b.objects]
            assert all(o.material.alpha_mode == "MASK" for o in b.objects)
            drawn += [Path(o.material.opacity_texture).name for o in b.objects]
        assert {Path(o.material.opacity_texture).name for o in a.objects} == {"d.png"}
        folders = {Path(o.material.opacity_texture).parent.name for o in c.objects}
        assert len(folders) == 1  # one option per scene
        options += folders
    assert set(drawn) == {"a.png", "b.png", "c.png"}  # 12 objects, 3 images: all drawn, per object
    assert set(options) == {"cards", "fences"}
    again = load_recipe(tmp_path / "folder.yaml")  # from the seed: a fresh load draws the same images
    assert [Path(o.material.opacity_texture).name for i in range(again.count) for o in sample(again, i).objects] == drawn


@pytest.mark.parametrize(("field", "expected"), [
    ("transmission: 1.5", "objects[0].material.transmission: "),
    ("ior: {uniform: [0.5, 1.5]}", "objects[0].material.ior: must lie in [1, 5]"),
    ("alpha_mode: CLIP", "objects[0].material.alpha_mode: "),
    ("alpha_cutoff: -0.1", "objects[0].material.alpha_cutoff: "),
    ("opacity_texture: missing.png", "objects[0].material.opacity_texture: file not found"),
    ("opacity_texture: notes.txt", "objects[0].material.opacity_texture: no such file or folder"),
    ("opacity_texture: broken.png", "objects[0].material.opacity_texture: "),
    ("opacity_texture: empty", "objects[0].material.opacity_texture: "),
    ("opacity_texture: {choice: [broken.png, missing]}", "objects[0].material.opacity_texture: "),
])
def test_bad_transparency_fields_name_the_file_position_and_field(tmp_path, field, expected):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "empty").mkdir()
    text = GLASS_RECIPE % (", " + field, "")
    path = write_recipe(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_recipe(path)
    line = text.splitlines()[7]
    column = line.index(field.split(": ", 1)[1]) + 1  # the value's position
    assert str(info.value).startswith(f"{path}:8:{column}: {expected}"), str(info.value)


def test_bad_transparency_field_exits_2_without_a_traceback(tmp_path):
    path = write_recipe(tmp_path, GLASS_RECIPE % (", ior: 9", ""))
    result = run_cli("validate", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{path}:8:" in result.stderr and "objects[0].material.ior" in result.stderr


def test_behind_pass_reaches_the_torch_dataset_and_the_preview(rendered):
    from sceneforge.labels.preview import MIN_TILE_WIDTH, contact_sheet, instance_colour
    from sceneforge.labels.torch import SceneForgeDataset

    store, records = rendered
    sample = SceneForgeDataset(store, passes=("depth_behind", "instance_behind"))[0]
    assert sample["depth_behind"].shape == (1, H, W) and sample["instance_behind"].shape == (H, W)
    assert np.array_equal(sample["depth_behind"][0].numpy(), store.read_pass(records[0], "depth_behind"))
    assert np.array_equal(sample["instance_behind"].numpy(), store.read_pass(records[0], "instance_behind"))
    sheet = contact_sheet(store, [0])
    tile = W * -(-MIN_TILE_WIDTH // W)
    assert sheet.shape[1] == 6 * tile  # rgb, depth, normals, instances, depth behind, behind
    behind_tile = sheet[:, 5 * tile:]
    glass = cv2.resize(store.read_pass(records[0], "instance_behind"), (tile, sheet.shape[0]), interpolation=cv2.INTER_NEAREST)
    below_caption = np.arange(sheet.shape[0])[:, None] >= 20
    assert np.all(behind_tile[(glass == 2) & below_caption] == instance_colour(2))
