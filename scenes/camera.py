"""Lens models: projecting through K and a lens, casting rays through pixel centres, and the wide
pinhole render that a distorted image is warped from.

Coordinates follow OpenCV: integer pixel coordinates are pixel centres; a camera-frame point
(X, Y, Z) has normalised coordinates (x, y) = (X / Z, Y / Z). A lens maps (x, y) to distorted
normalised coordinates (xd, yd), and K maps those to pixels: u = fx xd + cx, v = fy yd + cy.

- ``brown_conrady`` (k1, k2, p1, p2, k3), as ``cv2.projectPoints``: with r² = x² + y²,
  xd = x (1 + k1 r² + k2 r⁴ + k3 r⁶) + 2 p1 x y + p2 (r² + 2 x²), and yd likewise.
- ``fisheye`` (k1..k4), as ``cv2.fisheye.projectPoints`` (Kannala-Brandt): with θ = atan(r),
  θd = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸) and (xd, yd) = (x, y) θd / r.

Each model is used only where its radial map increases: r (brown_conrady) or θ (fisheye) below
the first zero of its derivative, and for the fisheye below 90 degrees off axis (a pinhole render
cannot hold more, and rays keep z = 1). Points outside that range, or with Z <= 0, have no
projection (NaN); pixels whose distorted radius lies beyond it have no ray (NaN). ``lens_problem``
checks that every pixel of the image lies within it, so for a checked camera every pixel has a ray.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from .spec import CameraSpec, LensSpec

RENDER_MARGIN = 2  # render pixels beyond the outermost source position on every side
MAX_RENDER_SCALE = 8  # the wide render's side, at most this many times the image's
MAX_RENDER_SIDE = 16384  # Blender's largest resolution
_NEWTON_STEPS = 30  # at most; quadratic convergence takes a handful
_CONVERGED = 1e-13  # normalised coordinates (about 1e-10 px): a step this small ends the iteration


def pixel_rays(K: np.ndarray, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Pinhole camera-frame ray directions through pixel centres (u, v) of K, scaled so that z = 1."""
    return np.stack([us, vs, np.ones_like(us)], axis=-1).astype(np.float64) @ np.linalg.inv(K).T


def project_points(camera: CameraSpec, points_camera: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N x 2) of camera-frame points through K and the lens (the numbers of
    ``cv2.projectPoints`` / ``cv2.fisheye.projectPoints``); NaN rows for points with Z <= 0 and,
    with a lens, for points beyond the range where its radial map increases."""
    points = np.asarray(points_camera, dtype=np.float64).reshape(-1, 3)
    z = points[:, 2]
    ahead = z > 0
    xy = points[:, :2] / np.where(ahead, z, 1.0)[:, None]
    if camera.lens is not None:
        xy, inside = _distort(camera.lens, xy)
        ahead &= inside
    (fx, skew, cx), (_, fy, cy), _ = camera.K
    uv = np.stack([fx * xy[:, 0] + skew * xy[:, 1] + cx, fy * xy[:, 1] + cy], axis=-1)
    return np.where(ahead[:, None], uv, np.nan)


def camera_rays(camera: CameraSpec, us: np.ndarray, vs: np.ndarray) -> np.ndarray:
    """Camera-frame ray directions (N x 3, z = 1) through pixel positions (u, v): exactly
    ``pixel_rays`` without a lens; with one, the inverse of ``project_points`` (NaN rows where a
    distorted radius lies beyond the lens's increasing range, never inside a checked image)."""
    us, vs = np.ravel(us).astype(np.float64), np.ravel(vs).astype(np.float64)
    if camera.lens is None:
        return pixel_rays(np.asarray(camera.K), us, vs)
    distorted = pixel_rays(np.asarray(camera.K), us, vs)[:, :2]
    xy = _undistort(camera.lens, distorted)
    return np.concatenate([xy, np.ones((len(xy), 1))], axis=1)


def lens_problem(camera: CameraSpec) -> str | None:
    """Why the camera's lens cannot make its image (None: it can).

    Checked: the radial map (brown_conrady: r (1 + k1 r² + k2 r⁴ + k3 r⁶); fisheye: θ (1 + k1 θ²
    + ... + k4 θ⁸), θ < 90 degrees) increases strictly from the axis out to the distorted radius of
    the image's farthest corner (its pixel's outer edge); the full model (tangential terms too)
    inverts every pixel centre to within 1e-6 px; and the pinhole render holding that field is at
    most MAX_RENDER_SCALE times the image's side and MAX_RENDER_SIDE pixels.
    """
    lens = camera.lens
    if lens is None:
        return None
    (fx, _, cx), (_, fy, cy), _ = camera.K
    corners = [(u, v) for u in (-0.5, camera.width - 0.5) for v in (-0.5, camera.height - 0.5)]
    radii = [math.hypot((u - cx) / fx, (v - cy) / fy) for u, v in corners]
    corner = corners[int(np.argmax(radii))]
    needed = max(radii)
    limit, reach = _radial_limit(lens)
    if reach <= needed:
        k = lens.coefficients
        if lens.model == "fisheye":
            formula = _polynomial("θ", k)
            turn = (f"stops increasing at θ = {math.degrees(limit):.1f} degrees" if limit < math.pi / 2
                    else "reaches 90 degrees off axis")
        else:
            formula = _polynomial("r", (k[0], k[1], k[4]))
            turn = f"stops increasing at r = {limit:.3g} ({math.degrees(math.atan(limit)):.1f} degrees off axis)"
        return (f"the lens folds the image: its radial map {formula} {turn} at a distorted radius of "
                f"{reach:.3g}, inside the image, whose corner pixel edge {corner} lies at {needed:.3g}; "
                "weaken the coefficients or narrow the field of view")
    pixels = _pixel_grid(camera.width, camera.height)
    residual = np.abs(project_points(camera, _image_rays(*_intrinsics_key(camera))) - pixels).max(axis=1)
    failed = np.flatnonzero(~(residual <= 1e-6))  # NaN: the ray found lies beyond the increasing range
    if len(failed):
        u, v = pixels[failed[0]]
        return (f"the lens folds the image: with its tangential terms the model is not invertible at pixel "
                f"({u:g}, {v:g}) ({len(failed)} pixel(s) in all); weaken p1/p2 or the radial coefficients")
    wide = render_camera(camera)
    if max(wide.width / camera.width, wide.height / camera.height) > MAX_RENDER_SCALE or \
            max(wide.width, wide.height) > MAX_RENDER_SIDE:
        return (f"the lens sees too wide a field for a pinhole render: {wide.width} x {wide.height} px "
                f"(at most {MAX_RENDER_SCALE} times the image's side and {MAX_RENDER_SIDE} px); weaken the "
                "distortion or narrow the field of view")
    return None


def _polynomial(variable: str, coefficients: tuple[float, ...]) -> str:
    """A radial map as text: ``r (1 - 0.3 r² + 0.1 r⁴)`` (zero terms left out)."""
    powers = ("²", "⁴", "⁶", "⁸")
    terms = "".join(f" {'-' if c < 0 else '+'} {abs(c):g} {variable}{power}" for c, power in zip(coefficients, powers) if c)
    return f"{variable} (1{terms})"


def render_camera(camera: CameraSpec) -> CameraSpec:
    """The pinhole camera to render for ``camera``: the camera itself without a lens; with one, the
    same pose with the image's focal lengths (one render pixel per image pixel at the centre, where
    both models are the identity to first order) and a size and principal point that put every
    pixel centre's source RENDER_MARGIN pixels or more inside the render."""
    if camera.lens is None:
        return camera
    return camera.model_copy(update=dict(zip(("K", "width", "height"), _render_intrinsics(*_intrinsics_key(camera))),
                                         lens=None))


def warp_maps(camera: CameraSpec) -> np.ndarray:
    """For each image pixel centre (H x W x 2: u, v), its source position in ``render_camera``'s
    image (render pixel coordinates, OpenCV convention)."""
    return _warp_maps(*_intrinsics_key(camera))


def source_pixels(camera: CameraSpec) -> np.ndarray:
    """For each image pixel (H x W x 2 int: column, row), the render pixel nearest its source: the
    one label passes (ids, depth, normals) are taken from."""
    return np.floor(warp_maps(camera) + 0.5).astype(np.intp)


def label_rays(camera: CameraSpec) -> np.ndarray:
    """Camera-frame rays (H x W x 3, z = 1) along which each pixel's label passes were measured:
    through its nearest source pixel's centre in the render (with no lens, its own centre)."""
    if camera.lens is None:
        return camera_rays(camera, *_pixel_grid(camera.width, camera.height).T).reshape(camera.height, camera.width, 3)
    wide = render_camera(camera)
    source = source_pixels(camera).reshape(-1, 2)
    return pixel_rays(np.asarray(wide.K), source[:, 0], source[:, 1]).reshape(camera.height, camera.width, 3)


def _intrinsics_key(camera: CameraSpec) -> tuple:
    """What the lens geometry of a camera depends on (its pose does not matter)."""
    return camera.K, camera.width, camera.height, camera.lens


def _pixel_grid(width: int, height: int) -> np.ndarray:
    """Pixel centres (H*W x 2: u, v), row by row."""
    vs, us = np.mgrid[0:height, 0:width]
    return np.stack([us.ravel(), vs.ravel()], axis=-1).astype(np.float64)


@lru_cache(maxsize=8)
def _image_rays(K: tuple, width: int, height: int, lens: LensSpec) -> np.ndarray:
    """camera_rays of every pixel centre (H*W x 3), read-only: shared by the render and the labels."""
    camera = CameraSpec(K=K, world_from_camera=tuple(map(tuple, np.eye(4))), width=width, height=height,
                        clip_start=1.0, clip_end=2.0, lens=lens)
    rays = camera_rays(camera, *_pixel_grid(width, height).T)
    rays.flags.writeable = False
    return rays


@lru_cache(maxsize=8)
def _render_intrinsics(K: tuple, width: int, height: int, lens: LensSpec) -> tuple[tuple, int, int]:
    rays = _image_rays(K, width, height, lens)
    if not np.isfinite(rays).all():
        raise ValueError("the lens has no ray for some pixels of the image (see lens_problem)")
    (fx, skew, _), (_, fy, _), _ = K
    low, high = rays[:, :2].min(axis=0), rays[:, :2].max(axis=0)
    # Render pixel u' = fx x + cx': the lowest source lands RENDER_MARGIN pixels in.
    cx, cy = RENDER_MARGIN - fx * low[0], RENDER_MARGIN - fy * low[1]
    render_width = math.ceil(fx * (high[0] - low[0])) + 2 * RENDER_MARGIN + 1
    render_height = math.ceil(fy * (high[1] - low[1])) + 2 * RENDER_MARGIN + 1
    return ((fx, 0.0, cx), (0.0, fy, cy), (0.0, 0.0, 1.0)), render_width, render_height


@lru_cache(maxsize=8)
def _warp_maps(K: tuple, width: int, height: int, lens: LensSpec) -> np.ndarray:
    rays = _image_rays(K, width, height, lens)
    wide_K, wide_width, wide_height = _render_intrinsics(K, width, height, lens)
    source = (rays @ np.asarray(wide_K).T)[:, :2].reshape(height, width, 2)
    # By construction (see _render_intrinsics): every source lies RENDER_MARGIN pixels inside.
    assert (source >= RENDER_MARGIN - 1e-6).all() and (source[..., 0] <= wide_width - 1 - RENDER_MARGIN).all() \
        and (source[..., 1] <= wide_height - 1 - RENDER_MARGIN).all()
    source.flags.writeable = False
    return source


def _radial(lens: LensSpec, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The radial map (distorted radius) and its derivative at undistorted r (brown_conrady) or
    θ (fisheye)."""
    k = lens.coefficients
    powers = (k[0], k[1], k[4]) if lens.model == "brown_conrady" else k
    value, slope = np.array(r, dtype=np.float64), np.ones_like(r, dtype=np.float64)
    for n, c in enumerate(powers, start=1):
        value = value + c * r ** (2 * n + 1)
        slope = slope + (2 * n + 1) * c * r ** (2 * n)
    return value, slope


@lru_cache(maxsize=64)
def _radial_limit(lens: LensSpec) -> tuple[float, float]:
    """Where the radial map stops increasing (r, or θ capped at 90 degrees for the fisheye; inf
    when it never does) and the distorted radius it reaches there (its supremum)."""
    k = lens.coefficients
    powers = (k[0], k[1], k[4]) if lens.model == "brown_conrady" else k
    # The derivative 1 + sum (2n+1) k_n s^n in s = r²: its smallest positive real root.
    roots = np.roots([(2 * n + 1) * c for n, c in reversed(list(enumerate(powers, start=1)))] + [1.0]) \
        if any(powers) else np.array([])
    real = [root.real for root in roots if abs(root.imag) <= 1e-9 * abs(root) and root.real > 0]
    limit = math.sqrt(min(real)) if real else math.inf
    if lens.model == "fisheye":
        limit = min(limit, math.pi / 2)
    reach = math.inf if math.isinf(limit) else float(_radial(lens, np.array(limit))[0])
    return limit, reach


def _distort(lens: LensSpec, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distorted normalised coordinates of normalised ones, and whether each lies in the lens's
    increasing range."""
    x, y = xy[:, 0], xy[:, 1]
    r = np.hypot(x, y)
    limit = _radial_limit(lens)[0]
    k = lens.coefficients
    if lens.model == "fisheye":
        theta = np.arctan(r)
        scale = np.where(r > 0, _radial(lens, theta)[0] / np.where(r > 0, r, 1.0), 1.0)
        return xy * scale[:, None], theta < limit
    radial = _radial(lens, r)[0] / np.where(r > 0, r, 1.0)
    radial = np.where(r > 0, radial, 1.0)
    p1, p2 = k[2], k[3]
    r2 = r * r
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1), r < limit


def _undistort(lens: LensSpec, distorted: np.ndarray) -> np.ndarray:
    """Normalised coordinates (N x 2) whose distortion is ``distorted``; NaN beyond the lens's range."""
    limit, reach = _radial_limit(lens)
    radius = np.hypot(distorted[:, 0], distorted[:, 1])
    beyond = radius >= reach
    # The radial map is increasing on [0, limit): Newton from the distorted radius, kept inside.
    ceiling = limit
    if math.isinf(limit):  # increasing everywhere, so unbounded: bracket the largest radius
        ceiling = max(float(radius.max(initial=0.0)), 1.0)
        while _radial(lens, np.array(ceiling))[0] <= radius.max(initial=0.0):
            ceiling *= 2
    r = np.minimum(radius, ceiling * 0.999)
    for _ in range(_NEWTON_STEPS):
        value, slope = _radial(lens, r)
        updated = np.clip(r - (value - radius) / slope, 0.0, ceiling * (1 - 1e-12))
        converged = np.all(np.abs(updated - r) <= _CONVERGED)
        r = updated
        if converged:
            break
    direction = distorted / np.where(radius > 0, radius, 1.0)[:, None]
    if lens.model == "fisheye":
        xy = direction * np.tan(np.minimum(r, math.pi / 2 * (1 - 1e-12)))[:, None]
        return np.where(beyond[:, None], np.nan, xy)
    xy = direction * r[:, None]
    p1, p2 = lens.coefficients[2], lens.coefficients[3]
    if p1 or p2:  # the tangential terms: Newton on the full 2D model from the radial solution
        for _ in range(_NEWTON_STEPS):
            step = _solve(_jacobian(lens, xy), _distort(lens, xy)[0] - distorted)
            xy = xy - step
            if np.all(np.abs(step[~beyond]) <= _CONVERGED):
                break
    return np.where(beyond[:, None], np.nan, xy)


def _jacobian(lens: LensSpec, xy: np.ndarray) -> np.ndarray:
    """d(xd, yd) / d(x, y) of the brown_conrady model (N x 2 x 2)."""
    k1, k2, p1, p2, k3 = lens.coefficients
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
    d_radial = k1 + 2 * k2 * r2 + 3 * k3 * r2 ** 2  # d radial / d r2
    jacobian = np.empty((len(xy), 2, 2))
    jacobian[:, 0, 0] = radial + 2 * x * x * d_radial + 2 * p1 * y + 6 * p2 * x
    jacobian[:, 0, 1] = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
    jacobian[:, 1, 0] = 2 * x * y * d_radial + 2 * p1 * x + 2 * p2 * y
    jacobian[:, 1, 1] = radial + 2 * y * y * d_radial + 6 * p1 * y + 2 * p2 * x
    return jacobian


def _solve(jacobian: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Per-row solutions of 2 x 2 systems (singular rows left unchanged: NaN guards elsewhere)."""
    a, b, c, d = jacobian[:, 0, 0], jacobian[:, 0, 1], jacobian[:, 1, 0], jacobian[:, 1, 1]
    det = a * d - b * c
    det = np.where(np.abs(det) > 1e-15, det, np.inf)
    return np.stack([(d * residual[:, 0] - b * residual[:, 1]) / det,
                     (a * residual[:, 1] - c * residual[:, 0]) / det], axis=-1)
