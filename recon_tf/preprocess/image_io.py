"""Robust image decoding: any file a user brings → RGB uint8, or a typed error.

Policy (every case is tested in ``tests/test_preprocess.py``):

* **Decoders**: Pillow first (applies the EXIF orientation, handles palette,
  CMYK, LA/RGBA, 1-bit, 16/32-bit integer and float modes, the first frame of
  animations); OpenCV's ``imdecode`` as a fallback for files Pillow cannot
  read (e.g. some 16-bit TIFFs).
* **Phone formats**: HEIC/HEIF (iPhones' default) through ``pillow-heif``'s Pillow
  plugin, registered here when the package is installed (it is a dependency of
  ``setup.py``); AVIF through Pillow's own plugin. Both carry EXIF orientation like
  JPEG.
* **Grayscale** is replicated to 3 channels.
* **Alpha** (RGBA, LA, palette with transparency) is composited over white.
* **16-bit / 32-bit integer** images are scaled to 8 bits (``value / 257`` for
  16-bit; otherwise by the image's maximum); **float** images are taken as
  [0, 1] if their maximum is ≤ 1, else as [0, 255], then clipped.
* **Tiny** images (shorter side < ``min_side``, default 32 px) raise
  :class:`ImageDecodeError` with reason ``"too_small"``: no face in them can
  give a useful 224² crop.
* **Huge** images (a side > ``max_side``, default 8192 px) are *downscaled*
  so that the longer side equals ``max_side``; JPEGs are decoded directly at
  a reduced scale (Pillow's ``draft``), which is fast. The scale factor is
  returned so callers can express coordinates in the original pixels.
  Images with more than ``max_pixels`` (default 2^28 ≈ 268 Mpx, 0.8 GB as
  RGB) are *skipped* with reason ``"too_large"`` instead of decoded.
* **Empty**, **non-image** and **corrupt/truncated** files raise
  :class:`ImageDecodeError` with reasons ``"empty"``, ``"not_an_image"`` and
  ``"corrupt"``.

Coordinates: "original pixels" are those of the decoded image after EXIF
orientation, at full resolution; pixel centres are at integer coordinates.
"""

from __future__ import annotations

import dataclasses
import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from recon_tf.data.readers import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS  # re-exported

DEFAULT_MIN_SIDE = 32
DEFAULT_MAX_SIDE = 8192
DEFAULT_MAX_PIXELS = 1 << 28

_EXIF_ORIENTATION_TAG = 0x0112

try:  # HEIC/HEIF photos (module docstring); without the package they are "not_an_image"
    from pillow_heif import register_heif_opener
except ImportError:  # pragma: no cover - pillow-heif is a dependency
    register_heif_opener = None
if register_heif_opener is not None:
    register_heif_opener()



class ImageDecodeError(ValueError):
    """An image that cannot be used; ``reason`` is a short machine-readable code.

    Reasons: ``"empty"``, ``"not_an_image"``, ``"corrupt"``, ``"too_small"``,
    ``"too_large"``, ``"unreadable"`` (I/O error reading the file).
    """

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclasses.dataclass
class DecodedImage:
    """A decoded image.

    Attributes:
      pixels: uint8 [H, W, 3] RGB.
      scale: decoded pixels per original pixel (1.0 unless downscaled; ≤ 1).
      original_size: (width, height) of the original image in pixels.
      source_mode: the file's pixel mode as Pillow names it (e.g. ``"RGBA"``,
        ``"I;16"``), or ``"cv2:<dtype>x<channels>"`` for the OpenCV fallback.
    """

    pixels: np.ndarray
    scale: float
    original_size: tuple[int, int]
    source_mode: str


def load_image(path: str, min_side: int = DEFAULT_MIN_SIDE, max_side: int = DEFAULT_MAX_SIDE,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read and decode an image file (see the module docstring for the policy)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise ImageDecodeError("unreadable", f"{path}: {err}") from err
    return decode_image(data, min_side=min_side, max_side=max_side, max_pixels=max_pixels)


def decode_image(data: bytes, min_side: int = DEFAULT_MIN_SIDE,
                 max_side: int = DEFAULT_MAX_SIDE,
                 max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode encoded image bytes to RGB uint8.

    Args:
      data: the file's bytes.
      min_side: images whose shorter side is smaller raise ``"too_small"``.
      max_side: images with a longer side are downscaled to this size.
      max_pixels: images with more pixels raise ``"too_large"``.
    Returns:
      A :class:`DecodedImage`.
    Raises:
      ImageDecodeError: with a reason code.
    """
    if not data:
        raise ImageDecodeError("empty", "the file has no bytes")
    try:
        decoded = _decode_pillow(data, min_side, max_side, max_pixels)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as err:
        decoded = _decode_opencv(data, min_side, max_side, max_pixels)
        if decoded is None:
            if _has_image_signature(data):
                raise ImageDecodeError("corrupt", "an image header followed by "
                                       "undecodable data") from err
            raise ImageDecodeError("not_an_image", "not a recognised image format") from err
    except (OSError, ValueError, SyntaxError) as err:
        # Truncated data is corrupt (OpenCV would return a half-grey image); other
        # Pillow failures (e.g. an unsupported TIFF variant) get a second decoder.
        decoded = None if "truncated" in str(err) else _decode_opencv(
            data, min_side, max_side, max_pixels)
        if decoded is None:
            raise ImageDecodeError("corrupt", f"{type(err).__name__}: {err}") from err
    return decoded


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00",
               b"MM\x00*")


_ISO_BMFF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1",
                    b"avif", b"avis")


def _has_image_signature(data: bytes) -> bool:
    """True if the bytes start like a JPEG, PNG, GIF, TIFF, WebP, HEIC/HEIF or AVIF file."""
    return (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[4:8] == b"ftyp" and data[8:12] in _ISO_BMFF_BRANDS))


def _check_size(width: int, height: int, min_side: int, max_pixels: int) -> None:
    if min(width, height) < min_side:
        raise ImageDecodeError(
            "too_small", f"{width}x{height} px; the shorter side must be ≥ {min_side} px")
    if width * height > max_pixels:
        raise ImageDecodeError(
            "too_large", f"{width}x{height} px exceeds the limit of {max_pixels} pixels")


def _decode_pillow(data: bytes, min_side: int, max_side: int, max_pixels: int) -> DecodedImage:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit (max_pixels) applies instead
        try:
            image = Image.open(io.BytesIO(data))
            mode = image.mode
            orig_w, orig_h = image.size
            _check_size(orig_w, orig_h, min_side, max_pixels)
            if image.getexif().get(_EXIF_ORIENTATION_TAG, 1) in (5, 6, 7, 8):
                orig_w, orig_h = orig_h, orig_w  # EXIF rotates by 90 degrees
            if max(orig_w, orig_h) > max_side and image.format == "JPEG":
                image.draft("RGB", _fit(image.size[0], image.size[1], max_side))
            image.load()
            image = ImageOps.exif_transpose(image)
        finally:
            Image.MAX_IMAGE_PIXELS = saved_limit
    return _finish(_to_rgb8(image), orig_w, orig_h, max_side, mode)


def _decode_opencv(data: bytes, min_side: int, max_side: int,
                   max_pixels: int) -> DecodedImage | None:
    array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.ndim not in (2, 3) or array.size == 0:
        return None
    h, w = array.shape[:2]
    _check_size(w, h, min_side, max_pixels)
    channels = 1 if array.ndim == 2 else array.shape[2]
    mode = f"cv2:{array.dtype}x{channels}"
    if array.ndim == 3:
        code = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}.get(channels)
        array = cv2.cvtColor(array, code) if code is not None else array[..., :1]
    pixels = _array_to_rgb8(array)
    return _finish(pixels, w, h, max_side, mode)


def _finish(pixels: np.ndarray, orig_w: int, orig_h: int, max_side: int,
            mode: str) -> DecodedImage:
    h, w = pixels.shape[:2]
    if max(w, h) > max_side:
        tw, th = _fit(w, h, max_side)
        pixels = cv2.resize(pixels, (tw, th), interpolation=cv2.INTER_AREA)
    scale = pixels.shape[1] / float(orig_w)
    return DecodedImage(np.ascontiguousarray(pixels), scale, (orig_w, orig_h), mode)


def _fit(w: int, h: int, max_side: int) -> tuple[int, int]:
    s = max_side / float(max(w, h))
    return max(1, round(w * s)), max(1, round(h * s))


def _to_rgb8(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGB", "L", "RGBA", "LA"):
        return _array_to_rgb8(np.asarray(image))
    if mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "PA", "RGBX", "RGBa", "La"):
        return _array_to_rgb8(np.asarray(image.convert("RGBA" if "A" in mode or "a" in mode
                                                       else "RGB")))
    if mode.startswith("I;16"):
        array = np.asarray(image).astype(np.uint16)
        return _array_to_rgb8(array)
    if mode in ("I", "F"):
        return _array_to_rgb8(np.asarray(image))
    return _array_to_rgb8(np.asarray(image.convert("RGB")))


def _array_to_rgb8(array: np.ndarray) -> np.ndarray:
    """Any [H, W], [H, W, 1|2|3|4] array of any numeric dtype → uint8 [H, W, 3]."""
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    alpha = None
    if channels in (2, 4):
        alpha = _to_unit(array[..., -1:])
        array = array[..., :-1]
    color = _to_unit(array)
    if color.shape[2] == 1:
        color = np.repeat(color, 3, axis=2)
    if alpha is not None:
        color = color * alpha + (1.0 - alpha)
    return np.clip(np.rint(color * 255.0), 0, 255).astype(np.uint8)


def _to_unit(array: np.ndarray) -> np.ndarray:
    """Scale to float32 [0, 1] according to the dtype's meaning."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.bool_:
        return array.astype(np.float32)
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if np.issubdtype(array.dtype, np.integer):
        top = float(array.max()) if array.size else 1.0
        if top <= 255:
            return np.clip(array, 0, 255).astype(np.float32) / 255.0
        if top <= 65535:
            return np.clip(array, 0, 65535).astype(np.float32) / 65535.0
        return np.clip(array.astype(np.float64) / top, 0.0, 1.0).astype(np.float32)
    array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    top = float(array.max()) if array.size else 1.0
    return np.clip(array if top <= 1.0 else array / 255.0, 0.0, 1.0)
