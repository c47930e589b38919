"""Lens models against OpenCV itself, and rendered lens labels against analytic geometry.

Truth comes from OpenCV (``cv2.projectPoints``, ``cv2.undistortPointsIter``, ``cv2.fisheye``) and
from closed forms (a plane's depth along a ray, a ray meeting a sphere), never from SceneForge.
Rendered label pixels take their values from the render pixel nearest their source (the render
has the image's focal lengths), so a label pixel may describe any ray within half a render pixel
of its own in x and y: tolerances below are the extremes of the truth over that square.
"""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from sceneforge.floor.errors import UserError
from sceneforge.floor.frame import FORWARD_VALID
from sceneforge.labels.store import DatasetStore
from sceneforge.pipeline import render_dataset, render_specs
from sceneforge.scenes.camera import camera_rays, label_rays, lens_problem, pixel_rays, project_points, render_camera
from sceneforge.scenes.recipe import RenderSettings, load_recipe
from sceneforge.scenes.sampling import look_at, sample
from sceneforge.scenes.spec import (
    AssetRef,
    CameraSpec,
    LensSpec,
    LightSpec,
    MaterialSpec,
    ObjectSpec,
    RenderSpec,
    SceneSpec,
)

from .helpers import write_recipe

W, H = 640, 480
# (model, coefficients, focal length): realistic and strong, for each model.
LENSES = [
    ("brown_conrady", (-0.12, 0.03, 0.0008, -0.0005, 0.0), 520.0),  # a mild machine-vision lens
    ("brown_conrady", (-0.4, 0.2, 0.002, 0.003, -0.04), 500.0),  # strong barrel, tangential terms
    ("brown_conrady", (0.25, 0.08, -0.001, 0.002, 0.02), 500.0),  # pincushion
    ("fisheye", (-0.013, 0.021, -0.011, 0.002), 300.0),  # a GoPro-like fisheye, 150 degrees across
    # Strong: 163 degrees across the diagonal (OpenCV's fisheye undistortion clamps θd at 90 degrees)
    ("fisheye", (-0.05, 0.01, 0.001, -0.0005), 300.0),
]
EXACT = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 1000, 1e-15)


def lens_camera(model: str, coefficients: tuple, focal: float, width: int = W, height: int = H) -> CameraSpec:
    K = ((focal, 0.0, (width - 1) / 2 + 3.5), (0.0, focal * 1.02, (height - 1) / 2 - 2.0), (0.0, 0.0, 1.0))
    return CameraSpec(K=K, world_from_camera=tuple(map(tuple, np.eye(4))), width=width, height=height,
                      clip_start=0.01, clip_end=100.0, lens=LensSpec(model=model, coefficients=coefficients))


def cv2_normalised(camera: CameraSpec, uv: np.ndarray) -> np.ndarray:
    """OpenCV's undistorted normalised coordinates (N x 2) of pixel positions."""
    K, d = np.asarray(camera.K), np.asarray(camera.lens.coefficients)
    points = uv.reshape(-1, 1, 2).astype(np.float64)
    if camera.lens.model == "fisheye":
        return cv2.fisheye.undistortPoints(points, K, d, criteria=EXACT).reshape(-1, 2)
    return cv2.undistortPointsIter(points, K, d, None, None, EXACT).reshape(-1, 2)


def random_pixels(rng: np.random.Generator, n: int, width: int = W, height: int = H) -> np.ndarray:
    """Uniform positions over the whole image, out to its outer pixel edges."""
    return np.stack([rng.uniform(-0.5, width - 0.5, n), rng.uniform(-0.5, height - 0.5, n)], axis=-1)


@pytest.mark.parametrize(("model", "coefficients", "focal"), LENSES)
def test_projected_points_undistort_onto_their_pinhole_projection_with_opencv(model, coefficients, focal):
    camera = lens_camera(model, coefficients, focal)
    assert lens_problem(camera) is None
    rng = np.random.default_rng(7)
    # 3D points over the whole image, built from OpenCV's own inverse at random depths.
    normalised = cv2_normalised(camera, random_pixels(rng, 4000))
    points = np.concatenate([normalised, np.ones((len(normalised), 1))], axis=1) * rng.uniform(0.2, 50, (len(normalised), 1))
    projected = project_points(camera, points)
    K, d = np.asarray(camera.K), np.asarray(coefficients)
    if model == "fisheye":
        theirs = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)[0]
        undistorted = cv2.fisheye.undistortPoints(projected.reshape(-1, 1, 2), K, d, P=K, criteria=EXACT)
    else:
        theirs = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, d)[0]
        undistorted = cv2.undistortPointsIter(projected.reshape(-1, 1, 2), K, d, None, K, EXACT)
    assert np.abs(projected - theirs.reshape(-1, 2)).max() <= 1e-6
    pinhole = (points @ K.T)[:, :2] / points[:, 2:]
    assert np.abs(undistorted.reshape(-1, 2) - pinhole).max() <= 0.05


@pytest.mark.parametrize(("model", "coefficients", "focal"), LENSES)
def test_camera_rays_invert_project_points_and_agree_with_opencv(model, coefficients, focal):
    camera = lens_camera(model, coefficients, focal)
    pixels = random_pixels(np.random.default_rng(3), 4000)
    rays = camera_rays(camera, pixels[:, 0], pixels[:, 1])
    assert np.all(rays[:, 2] == 1.0)
    assert np.abs(project_points(camera, rays * 3.0) - pixels).max() <= 1e-6
    assert np.abs(rays[:, :2] - cv2_normalised(camera, pixels)).max() <= 1e-9 * max(1.0, np.abs(rays).max())


def test_without_a_lens_rays_and_projections_are_the_pinhole_maths():
    camera = lens_camera("fisheye", (0, 0, 0, 0), 300.0).model_copy(update={"lens": None})
    pixels = random_pixels(np.random.default_rng(1), 500)
    rays = camera_rays(camera, pixels[:, 0], pixels[:, 1])
    assert np.array_equal(rays, pixel_rays(np.asarray(camera.K), pixels[:, 0], pixels[:, 1]))
    assert np.allclose(project_points(camera, rays * 2.0), pixels, atol=1e-9)
    assert render_camera(camera) is camera


def test_points_behind_the_camera_or_past_the_lens_range_have_no_projection():
    brown = lens_camera(*LENSES[1])
    fisheye = lens_camera(*LENSES[3])
    behind = np.array([[0.1, 0.2, -1.0], [0.0, 0.0, 0.0]])
    assert np.isnan(project_points(brown, behind)).all() and np.isnan(project_points(fisheye, behind)).all()
    # 63 degrees off axis (r = 2): past where this barrel lens's radial map turns back (r = 1.55).
    far = np.array([[2.0, 0.0, 1.0]])
    assert np.isnan(project_points(brown, far)).all()
    folded = cv2.projectPoints(far, np.zeros(3), np.zeros(3), np.asarray(brown.K), np.asarray(brown.lens.coefficients))[0]
    assert 0 <= folded[0, 0, 0] < W, "OpenCV folds the point back into the image"
    assert np.isfinite(project_points(fisheye, far)).all()


def test_the_wide_render_holds_every_source_with_the_centre_at_full_resolution():
    for model, coefficients, focal in LENSES:
        camera = lens_camera(model, coefficients, focal)
        wide = render_camera(camera)
        assert wide.lens is None and wide.world_from_camera == camera.world_from_camera
        assert wide.K[0][0] == camera.K[0][0] and wide.K[1][1] == camera.K[1][1]
        # Every pixel centre's ray (OpenCV's) lands inside the render, off its border.
        normalised = cv2_normalised(camera, np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2).astype(float))
        source = normalised @ np.asarray(wide.K)[:2, :2].T + np.asarray(wide.K)[:2, 2]
        assert source.min() >= 1.0 and source[:, 0].max() <= wide.width - 2 and source[:, 1].max() <= wide.height - 2


FOLD_RECIPE = """\
render: {{resolution: [64, 48]}}
camera:
  fov_deg: {fov}
  lens:
    model: {model}
    k1: {k1}
objects: [{{category: box, asset: {{primitive: box}}}}]
"""


@pytest.mark.parametrize(("model", "k1", "fov", "says"), [
    ("brown_conrady", -0.6, 90, r"radial map r \(1 - 0\.6 r²\) stops increasing at r = 0\.745 \(36\.7 degrees off axis\)"),
    ("fisheye", -0.3, 90, "stops increasing at θ = "),
    ("fisheye", 0.0, 150, "reaches 90 degrees off axis"),
])
def test_a_lens_that_folds_the_image_is_refused_where_it_is_written(tmp_path, model, k1, fov, says):
    path = write_recipe(tmp_path, FOLD_RECIPE.format(model=model, k1=k1, fov=fov))
    with pytest.raises(UserError, match=rf"^{path}:5:5: camera\.lens: the lens folds the image: .*{says}") as info:
        load_recipe(path)
    assert "corner pixel edge (-0.5, -0.5)" in str(info.value)


def test_a_drawn_lens_that_folds_the_image_names_the_scene(tmp_path):
    path = write_recipe(tmp_path, FOLD_RECIPE.format(model="brown_conrady", k1="{uniform: [-0.7, 0.1]}", fov=90))
    recipe = load_recipe(path)  # drawn: checked per scene
    errors = []
    for index in range(12):
        try:
            sample(recipe, index)
        except UserError as exc:
            errors.append(str(exc))
    assert errors, "some scene draws a folding k1"
    assert all(e.startswith(f"{path}:5:5: camera.lens: scene ") and " drew k1 = -0." in e for e in errors)


def test_lens_coefficients_of_the_other_model_are_refused(tmp_path):
    path = write_recipe(tmp_path, "camera: {lens: {model: fisheye, k1: 0.1, p1: 0.01}}\n")
    with pytest.raises(UserError, match="camera.lens: .*a fisheye lens has no p1; its coefficients are k1, k2, k3, k4"):
        load_recipe(path)


PLANE_RECIPE = """\
seed: 4
count: 2
render: {{resolution: [48, 36], samples: 1}}
camera: {{fov_deg: {fov}, look_at: [0.1, -0.2, 0], distance: 1.7, elevation_deg: {elevation}, azimuth_deg: {{uniform: [0, 360]}},
          lens: {lens}}}
ground: {{size: 200}}
lights: [{{type: sun, energy: 2}}]
"""
RENDERED_LENSES = [  # (field of view, elevation: the ground fills the view, lens)
    (70, 55, "{model: brown_conrady, k1: -0.3, k2: 0.08, p1: 0.002, p2: -0.001}"),
    (90, 90, "{model: fisheye, k1: {uniform: [-0.05, 0.02]}, k2: 0.01}"),
]


def nearest_source_square(camera: dict, uv: np.ndarray) -> np.ndarray:
    """The rays (N x 4 x 3) at the corners of the half-render-pixel square around each pixel's
    OpenCV ray: the render's focal lengths are the image's."""
    lens = camera["lens"]
    spec = CameraSpec(K=camera["K"], world_from_camera=camera["world_from_camera"], width=camera["width"],
                      height=camera["height"], clip_start=0.01, clip_end=100, lens=LensSpec(**lens))
    xy = cv2_normalised(spec, uv)
    (fx, _, _), (_, fy, _), _ = camera["K"]
    offsets = np.array([[-1, -1], [-1, 1], [1, -1], [1, 1]]) * [0.5 / fx, 0.5 / fy]
    corners = xy[:, None, :] + offsets
    return np.concatenate([corners, np.ones(corners.shape[:2] + (1,))], axis=-1), xy


@pytest.mark.parametrize(("fov", "elevation", "lens"), RENDERED_LENSES)
def test_rendered_depth_normals_and_distance_follow_the_lens(tmp_path, fov, elevation, lens):
    recipe = load_recipe(write_recipe(tmp_path, PLANE_RECIPE.format(fov=fov, elevation=elevation, lens=lens)))
    store = render_dataset(recipe, tmp_path / "out").store
    for record in store.records():
        camera = record["camera"]
        assert camera["lens"]["model"] in lens and len(camera["lens"]["coefficients"]) in (4, 5)
        pose = np.asarray(camera["world_from_camera"])
        u, v = np.meshgrid(np.arange(48), np.arange(36))
        corners, xy = nearest_source_square(camera, np.stack([u.ravel(), v.ravel()], -1).astype(float))
        # The ground z = 0 along a camera ray d (z = 1) lies at planar depth -height / (R d)_z.
        def plane_depth(rays):
            return -pose[2, 3] / (rays @ pose[2, :3])
        square = plane_depth(corners)  # depth is monotonic along the square's sides: its extremes are corners
        depth = store.read_depth(record).ravel().astype(np.float64)
        assert np.all(square > 0), "the plane fills the view"
        assert np.all(depth >= square.min(axis=1) * (1 - 1e-4)) and np.all(depth <= square.max(axis=1) * (1 + 1e-4))
        spread = square.max(axis=1) / square.min(axis=1) - 1
        assert np.median(spread) < 0.05, "the tolerance is a small fraction of the depth, not a free pass"
        # Distance: the same source ray, whose length differs from the pixel's own by < 0.5/fx + 0.5/fy.
        (fx, _, _), (_, fy, _), _ = camera["K"]
        own = np.linalg.norm(np.concatenate([xy, np.ones((len(xy), 1))], axis=1), axis=1)
        ratio = store.read_distance(record).ravel() / depth
        assert np.abs(ratio - own).max() <= 0.5 / fx + 0.5 / fy + 1e-5
        angle = np.degrees(np.arccos(np.clip(store.read_normals(record).reshape(-1, 3) @ pose[:3, :3].T[:, 2], -1, 1)))
        assert angle.max() <= 0.5


def sphere_scene(index: int, lens: LensSpec, focal: float) -> SceneSpec:
    width, height = 64, 48
    K = ((focal, 0.0, (width - 1) / 2 + 1.5), (0.0, focal, (height - 1) / 2 - 1.0), (0.0, 0.0, 1.0))
    eye, target = np.array([0.0, -2.0, 0.6]), np.array([0.0, 0.0, 0.3])
    camera = CameraSpec(K=K, world_from_camera=tuple(map(tuple, look_at(eye, target))), width=width, height=height,
                        clip_start=0.01, clip_end=100.0, lens=lens)
    # A ball off-axis, where the lens bends it most: right of and below the image centre.
    pose = np.eye(4)
    pose[:3, 3] = [0.55, 0.3, 0.05]  # a primitive sphere stands on its origin: centre 0.25 higher
    ball = ObjectSpec(instance_id=1, category_id=1, category="ball", asset=AssetRef.primitive_asset("sphere", {"radius": 0.25}),
                      world_from_object=tuple(map(tuple, pose)), material=MaterialSpec(base_color=(0.8, 0.2, 0.2)))
    sun = LightSpec(type="sun", energy=3.0, color=(1, 1, 1), world_from_light=tuple(map(tuple, np.diag([1.0, -1, -1, 1]))), size=0.5)
    settings = RenderSettings(samples=1).model_dump(exclude={"resolution"})
    return SceneSpec(index=index, scene_index=index, seed=index, camera=camera, objects=[ball], lights=[sun], ground=None,
                     background_color=(0.1, 0.1, 0.1), background_strength=1.0, render=RenderSpec(**settings, noise_seed=1))


def test_a_sphere_mask_matches_its_lens_ray_cast_silhouette(tmp_path):
    scenes = [sphere_scene(0, LensSpec(model="brown_conrady", coefficients=(-0.35, 0.1, 0.001, 0.002, 0.0)), 45.0),
              sphere_scene(1, LensSpec(model="fisheye", coefficients=(-0.02, 0.01, 0.0, 0.0)), 30.0)]
    store = DatasetStore.open_for_writing(tmp_path / "out", recipe={}, recipe_hash="lens", categories=["ball"],
                                          resolution=(64, 48), requested=len(scenes))
    render_specs(store, scenes)
    for spec, record in zip(scenes, sorted(store.records(), key=lambda r: r["index"])):
        camera_from_world = np.linalg.inv(np.asarray(spec.camera.world_from_camera))
        centre = camera_from_world[:3, :3] @ np.array([0.55, 0.3, 0.3]) + camera_from_world[:3, 3]
        K, d = np.asarray(spec.camera.K), np.asarray(spec.camera.lens.coefficients)
        projector = cv2.fisheye.projectPoints if spec.camera.lens.model == "fisheye" else cv2.projectPoints
        expected = projector(centre.reshape(1, 1, 3), np.zeros(3), np.zeros(3), K, d)[0].ravel()
        (ball,) = record["objects"]
        assert np.abs(np.asarray(ball["center_image"]) - expected).max() <= 1e-6
        mask = store.read_instance(record) == 1
        assert mask[int(round(expected[1])), int(round(expected[0]))], "the projected centre lies in the mask"
        # The silhouette: rays (OpenCV's) within the half-render-pixel square of each pixel, 5 x 5 each.
        u, v = np.meshgrid(np.arange(64), np.arange(48))
        corners, xy = nearest_source_square(record["camera"], np.stack([u.ravel(), v.ravel()], -1).astype(float))
        steps = np.linspace(0, 1, 5)
        low, high = corners[:, 0, :2], corners[:, 3, :2]
        samples = low[:, None, None] + (high - low)[:, None, None] * np.stack(np.meshgrid(steps, steps, indexing="ij"), -1)
        rays = np.concatenate([samples, np.ones(samples.shape[:3] + (1,))], -1).reshape(len(xy), -1, 3)
        # A ray t d meets the sphere when its distance to the centre is within the radius.
        along = rays @ centre / np.einsum("nsk,nsk->ns", rays, rays)
        gap = np.linalg.norm(rays * along[..., None] - centre, axis=-1)
        # The mesh (an icosphere) lies inside the sphere by up to 6e-4 of its radius.
        inner, outer = gap <= 0.25 * (1 - 1e-3), gap <= 0.25
        must, may = inner.all(axis=1).reshape(48, 64), outer.any(axis=1).reshape(48, 64)
        assert must.sum() > 15, "the ball covers a good part of the image"
        assert np.all(mask[must]) and not np.any(mask[~may])
        assert ball["visible_pixels"] == mask.sum()
        # Unoccluded pixels are cast along each pixel's own ray (its square's centre, sample 12).
        assert inner[:, 12].sum() <= ball["unoccluded_pixels"] <= outer[:, 12].sum()
        assert ball["truncation"] == 0.0
        ys, xs = np.nonzero(mask)
        assert ball["bbox_xywh"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        # The warped image agrees with the warped labels: red inside the ball, grey well outside it.
        rgb = store.read_rgb(record).astype(int)
        redness = rgb[..., 0] - rgb[..., 1]
        outside = ~cv2.dilate(may.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert redness[must].mean() > 20 and np.abs(redness[outside]).max() <= 3
        # The labels' rays are those of the nearest source pixels, inside each pixel's square.
        label = label_rays(spec.camera).reshape(-1, 3)[:, :2]
        assert np.all(label >= low - 1e-9) and np.all(label <= high + 1e-9)


def test_the_usd_camera_keeps_K_and_carries_the_lens_in_custom_data():
    from pxr import UsdGeom

    from sceneforge.labels.usd_scene import scene_stage

    lens = LensSpec(model="fisheye", coefficients=(-0.02, 0.01, 0.0, 0.0))
    spec = sphere_scene(0, lens, 30.0)
    stage = scene_stage(spec)
    (prim,) = [p for p in stage.Traverse() if p.IsA(UsdGeom.Camera)]
    assert prim.GetCustomDataByKey("sceneforge:lens_model") == "fisheye"
    assert list(prim.GetCustomDataByKey("sceneforge:lens_coefficients")) == list(lens.coefficients)
    gf_camera = UsdGeom.Camera(prim).GetCamera()
    # The focal length over the horizontal aperture is fx / W: K's, not the wide render's.
    assert gf_camera.focalLength / gf_camera.horizontalAperture == pytest.approx(30.0 / 64)


def test_flow_through_a_fisheye_follows_opencv_projections_of_the_moved_plane(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, """\
        count: 2
        render: {resolution: [48, 40], samples: 1}
        sequence: {frames: 2, fps: 10, point_tracks: 0}
        camera:
          fov_deg: 90
          look_at: [0, 0, 0]
          distance: 2
          elevation_deg: 90
          trajectory: {type: line, velocity: [0.4, 0.2, 0], look: fixed}
          lens: {model: fisheye, k1: -0.03, k2: 0.01}
        ground: {size: 40}
        """))
    store = render_dataset(recipe, tmp_path / "out").store
    first, second = sorted(store.records(), key=lambda r: r["index"])
    camera, pose = first["camera"], np.asarray(first["camera"]["world_from_camera"])
    step = np.asarray(second["camera"]["world_from_camera"])[:3, 3] - pose[:3, 3]
    u, v = np.meshgrid(np.arange(48), np.arange(40))
    pixels = np.stack([u.ravel(), v.ravel()], -1).astype(float)
    corners, _ = nearest_source_square(camera, pixels)
    # The plane point on each corner ray, seen from the moved camera, projected by OpenCV.
    points = corners * (-pose[2, 3] / (corners @ pose[2, :3]))[..., None]
    moved = points - pose[:3, :3].T @ step
    K, d = np.asarray(camera["K"]), np.asarray(camera["lens"]["coefficients"])
    landed = cv2.fisheye.projectPoints(moved.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, d)[0].reshape(-1, 4, 2)
    expected = landed - pixels[:, None]
    flow = store.read_flow(first, "flow_forward").reshape(-1, 2)
    valid = (store.read_flow_valid(first).ravel() & FORWARD_VALID) > 0
    assert valid.mean() > 0.8
    low, high = expected.min(axis=1) - 0.01, expected.max(axis=1) + 0.01
    assert np.all((flow[valid] >= low[valid]) & (flow[valid] <= high[valid]))
    # The flow varies over the image (it is constant for a pinhole): the lens is in play.
    assert np.ptp(flow[valid], axis=0).max() > 0.3


def test_the_lens_is_drawn_once_per_scene_and_reproducibly(tmp_path):
    path = write_recipe(tmp_path, """\
        render: {resolution: [64, 48]}
        camera: {frames_per_scene: 2, azimuth_deg: {uniform: [0, 360]}, lens: {model: brown_conrady, k1: {uniform: [-0.2, 0]}}}
        objects: [{category: box, asset: {primitive: box}}]
        """)
    specs = [sample(load_recipe(path), index) for index in range(4)]
    lenses = [spec.camera.lens for spec in specs]
    assert lenses[0] == lenses[1] and lenses[2] == lenses[3] and lenses[0] != lenses[2]
    assert specs[0].camera.world_from_camera != specs[1].camera.world_from_camera
    assert all(-0.2 <= lens.coefficients[0] <= 0 and lens.coefficients[1:] == (0, 0, 0, 0) for lens in lenses)
    assert [sample(load_recipe(path), index).to_json() for index in range(4)] == [spec.to_json() for spec in specs]
