"""The TFRecord example schema: the one place defining feature names and shapes.

One ``tf.train.Example`` per aligned face (written by ``tools/preprocess.py``):

=====================  ==============  ==============================================
feature                type            content
=====================  ==============  ==============================================
``image/encoded``      bytes           PNG or JPEG, RGB uint8 [H, W, 3] (H = W = 224
                                       by default)
``image/format``       bytes           ``b"png"`` or ``b"jpeg"``
``image/height``       int64           H
``image/width``        int64           W
``landmarks``          float × 136     68 (x, y) in crop pixels, x right, y down,
                                       pixel centres at integer coordinates
``mask/encoded``       bytes           PNG, uint8 [H, W] with values 0/255 (skin = 255)
``transform``          float × 6       [2, 3] affine (row-major) from source-image
                                       pixels to crop pixels
``source/path``        bytes           the source image path (UTF-8)
``source/subject``     bytes           subject/identity id if known, else empty
``extra/names``        bytes list      names of the extra tensors below
``extra/<name>``       bytes           a serialized ``TensorProto`` (float32, any
                                       shape): truth fields of a synthetic set
                                       (coefficients, vertices, UV maps, ...)
=====================  ==============  ==============================================

:func:`parse_example` turns one serialized example into a dict of tensors:
``image`` float32 [H, W, 3] in [0, 1] (the stored sRGB-encoded values / 255, no
linearisation: the space albedo and renders live in), ``landmarks`` float32 [68, 2],
``mask`` float32 [H, W, 1] in {0, 1}, ``transform`` float32 [2, 3],
``source_path`` and ``subject`` (string scalars), plus one float32 tensor per
requested extra name.

Alignment record: :func:`alignment_record` describes the face model and
camera that crops were aligned to (``tools/preprocess.py`` writes it into
``manifest.json``); :func:`check_alignment` refuses shards aligned for
another model or camera.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import cv2
import numpy as np
import tensorflow as tf

from recon_tf.camera import Camera

IMAGE = "image/encoded"
IMAGE_FORMAT = "image/format"
HEIGHT = "image/height"
WIDTH = "image/width"
LANDMARKS = "landmarks"
MASK = "mask/encoded"
TRANSFORM = "transform"
SOURCE_PATH = "source/path"
SUBJECT = "source/subject"
EXTRA_NAMES = "extra/names"
EXTRA_PREFIX = "extra/"

NUM_LANDMARKS = 68
IMAGE_FORMATS = ("png", "jpeg")
RESERVED_KEYS = ("image", "landmarks", "mask", "transform", "source_path", "subject")


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(values).tolist()))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def encode_image(image: np.ndarray, image_format: str = "png", jpeg_quality: int = 95) -> bytes:
    """Encode RGB uint8 [H, W, 3] (or grayscale [H, W]) as PNG or JPEG bytes."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpeg" else []
    ok, buf = cv2.imencode(".png" if image_format == "png" else ".jpg", array, params)
    if not ok:
        raise ValueError("image encoding failed")
    return buf.tobytes()


def _check_extra_name(name: str) -> None:
    if not name or name in RESERVED_KEYS or "/" in name:
        raise ValueError(f"invalid extra tensor name {name!r}: must be non-empty, contain no "
                         f"'/', and differ from {RESERVED_KEYS}")


def encode_example(image: np.ndarray, landmarks: np.ndarray, mask: np.ndarray,
                   source_path: str, transform: np.ndarray, subject: str = "",
                   extras: Mapping[str, np.ndarray] | None = None,
                   image_format: str = "png", jpeg_quality: int = 95) -> bytes:
    """Serialize one aligned face as a ``tf.train.Example``.

    Args:
      image: uint8 [H, W, 3] RGB.
      landmarks: float [68, 2] crop pixels (x right, y down).
      mask: uint8 [H, W] (0/255) or bool [H, W]; nonzero = skin.
      source_path: path of the source image.
      transform: float [2, 3] affine from source pixels to crop pixels.
      subject: identity id if known.
      extras: name → float array of any shape (stored as float32 TensorProto).
      image_format: ``"png"`` (lossless) or ``"jpeg"``.
      jpeg_quality: JPEG quality 1-100.
    Returns:
      The serialized example.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be [H, W, 3], got {image.shape}")
    h, w = image.shape[:2]
    landmarks = np.asarray(landmarks, np.float32)
    if landmarks.shape != (NUM_LANDMARKS, 2):
        raise ValueError(f"landmarks must be [68, 2], got {landmarks.shape}")
    mask = np.asarray(mask)
    if mask.shape != (h, w):
        raise ValueError(f"mask must be [{h}, {w}], got {mask.shape}")
    transform = np.asarray(transform, np.float32)
    if transform.shape != (2, 3):
        raise ValueError(f"transform must be [2, 3], got {transform.shape}")
    feature = {
        IMAGE: _bytes([encode_image(image, image_format, jpeg_quality)]),
        IMAGE_FORMAT: _bytes([image_format.encode()]),
        HEIGHT: _int(h),
        WIDTH: _int(w),
        LANDMARKS: _floats(landmarks),
        MASK: _bytes([encode_image(((mask > 0) * 255).astype(np.uint8), "png")]),
        TRANSFORM: _floats(transform),
        SOURCE_PATH: _bytes([source_path.encode("utf-8")]),
        SUBJECT: _bytes([subject.encode("utf-8")]),
    }
    names = []
    for name, value in (extras or {}).items():
        _check_extra_name(name)
        proto = tf.make_tensor_proto(np.asarray(value, np.float32))
        feature[EXTRA_PREFIX + name] = _bytes([proto.SerializeToString()])
        names.append(name.encode("utf-8"))
    feature[EXTRA_NAMES] = _bytes(names)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec(extra_names: Sequence[str] = ()) -> dict:
    """The ``tf.io.parse_single_example`` spec for the schema (+ requested extras)."""
    spec = {
        IMAGE: tf.io.FixedLenFeature([], tf.string),
        HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        WIDTH: tf.io.FixedLenFeature([], tf.int64),
        LANDMARKS: tf.io.FixedLenFeature([NUM_LANDMARKS * 2], tf.float32),
        MASK: tf.io.FixedLenFeature([], tf.string),
        TRANSFORM: tf.io.FixedLenFeature([6], tf.float32),
        SOURCE_PATH: tf.io.FixedLenFeature([], tf.string, default_value=""),
        SUBJECT: tf.io.FixedLenFeature([], tf.string, default_value=""),
    }
    for name in extra_names:
        _check_extra_name(name)
        spec[EXTRA_PREFIX + name] = tf.io.FixedLenFeature([], tf.string)
    return spec


def parse_example(serialized: tf.Tensor, image_size: int | None = None,
                  extra_names: Sequence[str] = (),
                  extra_shapes: Mapping[str, Sequence[int]] | None = None) -> dict:
    """Parse one serialized example (graph-compatible, for ``tf.data``).

    Args:
      serialized: a string scalar tensor.
      image_size: if given, the image and mask get the static shape
        [image_size, image_size, ...] (checked at run time).
      extra_names: extra tensors to parse (each must be present in every record).
      extra_shapes: optional static shapes of the extras.
    Returns:
      dict: ``image`` float32 [H, W, 3] in [0, 1]; ``landmarks`` float32
      [68, 2]; ``mask`` float32 [H, W, 1] in {0, 1}; ``transform`` float32
      [2, 3]; ``source_path``, ``subject`` string scalars; each extra float32.
    """
    f = tf.io.parse_single_example(serialized, feature_spec(extra_names))
    h, w = tf.cast(f[HEIGHT], tf.int32), tf.cast(f[WIDTH], tf.int32)
    image = tf.io.decode_image(f[IMAGE], channels=3, dtype=tf.uint8, expand_animations=False)
    image = tf.reshape(image, tf.stack([h, w, 3]))
    mask = tf.reshape(tf.io.decode_png(f[MASK], channels=1), tf.stack([h, w, 1]))
    if image_size is not None:
        image = tf.ensure_shape(image, [image_size, image_size, 3])
        mask = tf.ensure_shape(mask, [image_size, image_size, 1])
    out = {
        "image": tf.image.convert_image_dtype(image, tf.float32),
        "landmarks": tf.reshape(f[LANDMARKS], [NUM_LANDMARKS, 2]),
        "mask": tf.cast(mask > 127, tf.float32),
        "transform": tf.reshape(f[TRANSFORM], [2, 3]),
        "source_path": f[SOURCE_PATH],
        "subject": f[SUBJECT],
    }
    for name in extra_names:
        tensor = tf.io.parse_tensor(f[EXTRA_PREFIX + name], tf.float32)
        if extra_shapes and name in extra_shapes:
            tensor = tf.ensure_shape(tensor, list(extra_shapes[name]))
        out[name] = tensor
    return out


def list_extra_names(path: str) -> list[str]:
    """Names of the extra tensors stored in the first record of a TFRecord file."""
    for record in tf.data.TFRecordDataset(path).take(1):
        example = tf.train.Example.FromString(record.numpy())
        values = example.features.feature[EXTRA_NAMES].bytes_list.value
        return [v.decode("utf-8") for v in values]
    return []


def write_tfrecord(path: str, serialized_examples: Sequence[bytes]) -> None:
    """Write serialized examples to ``path`` atomically (a temporary file, then rename)."""
    tmp = path + ".tmp"
    with tf.io.TFRecordWriter(tmp) as writer:
        for record in serialized_examples:
            writer.write(record)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def camera_record(camera: Camera) -> dict:
    """The JSON-friendly description of an alignment camera: ``kind``,
    ``image_size`` [H, W], ``focal`` and ``ortho_scale`` (pixels),
    ``distance`` (model units)."""
    return {"kind": camera.kind, "image_size": [int(v) for v in camera.image_size],
            "focal": float(camera.focal), "ortho_scale": float(camera.ortho_scale),
            "distance": float(camera.distance)}


def alignment_record(face_model_name: str, face_model_hash: str, camera: Camera) -> dict:
    """What preprocessed crops were aligned to, as ``tools/preprocess.py`` records it
    in ``manifest.json`` and ``report.json``: ``{"face_model": {"name", "hash"},
    "camera": camera_record(camera)}`` (``hash``: ``FaceModel.geometry_hash``)."""
    return {"face_model": {"name": str(face_model_name), "hash": str(face_model_hash)},
            "camera": camera_record(camera)}


def _same(got, want) -> bool:
    """JSON value ``got`` equals ``want`` (floats to a relative 1e-6)."""
    if got is None:
        return False
    if isinstance(want, float):
        return bool(np.isclose(float(got), want, rtol=1e-6))
    if isinstance(want, list):
        return list(got) == want
    return got == want


def check_alignment(manifest: Mapping, face_model_name: str, face_model_hash: str,
                    camera: Camera) -> None:
    """Check that preprocessed shards were aligned for this face model and camera.

    Crops are aligned so that the model's mean landmarks, projected at zero
    pose with the alignment camera, land on fixed points; training with
    another model or camera would start from a systematically wrong pose.

    Args:
      manifest: the data set's ``manifest.json`` (a dict with the keys of
        :func:`alignment_record`).
      face_model_name: ``FaceModel.name``.
      face_model_hash: ``FaceModel.geometry_hash``.
      camera: the camera training renders with (its kind, image size, focal
        or orthographic scale and distance must match).
    Raises:
      ValueError: naming what differs (or that the manifest predates the
        record), and how to fix it.
    """
    fix = ("re-run tools/preprocess.py with --face_model/--camera/--image_size matching "
           "training, or train with the face model and camera the data was aligned to")
    if "face_model" not in manifest or "camera" not in manifest:
        raise ValueError(f"the manifest does not record the face model and camera the crops "
                         f"were aligned to (made by an older tools/preprocess.py); {fix}")
    want = alignment_record(face_model_name, face_model_hash, camera)
    problems = []
    got_model = manifest["face_model"]
    if (got_model.get("name"), got_model.get("hash")) != (want["face_model"]["name"],
                                                          want["face_model"]["hash"]):
        problems.append(f"face model {got_model.get('name')!r} (hash "
                        f"{str(got_model.get('hash'))[:12]}), not {face_model_name!r} "
                        f"(hash {face_model_hash[:12]})")
    got_cam, want_cam = manifest["camera"], want["camera"]
    scale_key = "focal" if want_cam["kind"] == "perspective" else "ortho_scale"
    for key in ("kind", "image_size", scale_key, "distance"):
        if not _same(got_cam.get(key), want_cam[key]):
            problems.append(f"camera {key} {got_cam.get(key)!r}, not {want_cam[key]!r}")
    if problems:
        raise ValueError("these shards were aligned for another face model or camera: "
                         + "; ".join(problems) + f"; {fix}")
