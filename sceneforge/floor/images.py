"""The limits of every image SceneForge reads from a user (textures, images inside glTF and USD
assets, HDRIs, backdrops, real photos): checked from the file's header, before any pixel decodes."""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

MAX_IMAGE_BYTES = 256 << 20
MAX_IMAGE_PIXELS = 8192 * 8192
_RADIANCE_SIZE = re.compile(rb"^[-+][XY] (\d+) [-+][XY] (\d+)$", re.MULTILINE)


def checked_image_size(source: Path | bytes) -> tuple[int, int]:
    """Width and height an image file (or its bytes) declares, within the limits above.

    PNG, JPEG, TIFF, BMP, WebP and TGA are read by Pillow (its header only), Radiance ``.hdr``
    and OpenEXR by their own headers. Raises ValueError saying what is wrong.
    """
    data_size = len(source) if isinstance(source, bytes) else source.stat().st_size
    if data_size > MAX_IMAGE_BYTES:
        raise ValueError(f"{data_size} bytes, more than the {MAX_IMAGE_BYTES} byte limit for an image")
    head = source[:65536] if isinstance(source, bytes) else _head(source)
    if head.startswith(b"#?"):
        width, height = _radiance_size(head)
    elif head.startswith(b"\x76\x2f\x31\x01"):  # OpenEXR's magic number
        width, height = _exr_size(source)
    else:
        width, height = _pillow_size(source)
    if width <= 0 or height <= 0 or width * height > MAX_IMAGE_PIXELS:
        raise ValueError(f"declares {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels (8192x8192)")
    return width, height


def _head(path: Path) -> bytes:
    with open(path, "rb") as file:
        return file.read(65536)


def _radiance_size(head: bytes) -> tuple[int, int]:
    match = _RADIANCE_SIZE.search(head)
    if match is None:
        raise ValueError("not a readable Radiance HDR image (no resolution line)")
    first, second = int(match[1]), int(match[2])
    return (second, first) if match[0].startswith((b"-Y", b"+Y")) else (first, second)


def _exr_size(source: Path | bytes) -> tuple[int, int]:
    import OpenEXR

    if isinstance(source, bytes):
        raise ValueError("OpenEXR images are read from files only")
    try:
        (x0, y0), (x1, y1) = OpenEXR.File(str(source), header_only=True).header()["dataWindow"]
    except Exception as exc:  # noqa: BLE001 - OpenEXR raises plain exceptions for damaged headers
        raise ValueError(f"not a readable OpenEXR image ({exc})") from None
    return int(x1 - x0 + 1), int(y1 - y0 + 1)


def _pillow_size(source: Path | bytes) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                return image.size
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ValueError(f"declares more pixels than the limit of {MAX_IMAGE_PIXELS} (8192x8192): {exc}") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"not a readable image ({exc})") from None
