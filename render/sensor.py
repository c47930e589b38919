"""The image sensor model applied after the render (numpy and OpenCV only, no bpy).

Physically ordered (docs/cameras.md, "Sensor model"): the optics act on the linear image
(Gaussian blur, cos^4 vignetting, lateral chromatic aberration), the sensor turns light into
electrons (Poisson shot noise and Gaussian read noise), the tone curve maps the result to 8 bits,
and the camera's encoder compresses it (JPEG). Every draw comes from the frame's ``sensor.seed``.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from sceneforge.scenes.camera import camera_rays
from sceneforge.scenes.spec import CameraSpec, SensorSpec

_BRIGHTEST = 1e6  # linear values above this (a million times white) count as this much light


def sensed_image(linear_rgb: np.ndarray, camera: CameraSpec,
                 tone: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """(rgb, rgb_clean) of a frame: ``tone`` (linear -> 8-bit RGB) of the linear render, and with
    a sensor model the sensed image instead, the clean one then second (None without a sensor)."""
    clean = tone(linear_rgb)
    sensor = camera.sensor
    if sensor is None:
        return clean, None
    rng = np.random.Generator(np.random.PCG64(sensor.seed))
    sensed = tone(apply_sensor(linear_rgb, sensor, camera, rng))
    if sensor.jpeg_quality is not None:
        sensed = jpeg(sensed, sensor.jpeg_quality)
    return sensed, clean


def apply_sensor(linear_rgb: np.ndarray, sensor: SensorSpec, camera: CameraSpec, rng: np.random.Generator) -> np.ndarray:
    """The linear image (H x W x 3, 1.0 = white, ``camera``'s image) after the optics and the
    sensor's noise, float32.

    Blur, vignetting (of each pixel's ray, through the lens) and chromatic aberration (about the
    principal point), then shot
    and read noise: with ``g = gain / full_well``, a pixel of linear value x becomes
    ``(Poisson(x / g) + Normal(0, read_noise)) * g``, of variance ``g x + (g read_noise)^2``.
    Values are not clipped here (the tone curve clips).
    """
    image = np.asarray(linear_rgb, dtype=np.float32)
    if sensor.blur_sigma_px > 0:
        image = cv2.GaussianBlur(image, (0, 0), sensor.blur_sigma_px, borderType=cv2.BORDER_REFLECT)
    if sensor.vignetting > 0:
        image = image * vignetting_factor(camera, sensor.vignetting)[..., None]
    if sensor.chromatic_aberration_px != 0:
        image = chromatic_aberration(image, np.asarray(camera.K), sensor.chromatic_aberration_px)
    return sensor_noise(image, sensor, rng)


def vignetting_factor(camera: CameraSpec, strength: float) -> np.ndarray:
    """H x W float32 gain ``(1 - s) + s cos^4(theta)``, theta the angle of each pixel centre's ray
    (through the lens) from the optical axis: the natural vignetting of the camera's own field of view."""
    us, vs = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    cos_theta = 1.0 / np.linalg.norm(camera_rays(camera, us, vs), axis=-1).reshape(us.shape)  # rays have z = 1
    return ((1.0 - strength) + strength * cos_theta**4).astype(np.float32)


def chromatic_aberration(image: np.ndarray, K: np.ndarray, corner_px: float) -> np.ndarray:
    """Lateral chromatic aberration: red magnified and blue shrunk about the principal point, each
    moving by ``corner_px`` at the image corner farthest from it (green stays)."""
    height, width = image.shape[:2]
    cx, cy = float(K[0][2]), float(K[1][2])
    radius = max(np.hypot(x - cx, y - cy) for x in (0, width - 1) for y in (0, height - 1))
    us, vs = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    out = image.copy()
    for channel, sign in ((0, 1.0), (2, -1.0)):
        scale = 1.0 + sign * corner_px / radius  # a point at radius r moves to r * scale
        map_x = (cx + (us - cx) / scale).astype(np.float32)
        map_y = (cy + (vs - cy) / scale).astype(np.float32)
        out[..., channel] = cv2.remap(np.ascontiguousarray(image[..., channel]), map_x, map_y, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
    return out


def sensor_noise(image: np.ndarray, sensor: SensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Poisson shot noise and Gaussian read noise (electrons) on a linear image, back in linear units."""
    if sensor.full_well is None:  # no electrons to count: a noiseless sensor
        return image
    per_electron = sensor.gain / sensor.full_well  # linear units per electron
    # The well does not saturate at white: the tone curve decides what is white (a view transform
    # may keep highlights above 1). The cap only keeps Poisson means finite and in range.
    light = np.clip(image, 0.0, _BRIGHTEST).astype(np.float64)
    electrons = rng.poisson(light / per_electron).astype(np.float64)
    if sensor.read_noise > 0:
        electrons += rng.normal(0.0, sensor.read_noise, image.shape)
    return (electrons * per_electron).astype(np.float32)


def jpeg(srgb8: np.ndarray, quality: int) -> np.ndarray:
    """An 8-bit RGB image after JPEG encoding at ``quality`` (1..100) and decoding (OpenCV's libjpeg)."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(srgb8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
