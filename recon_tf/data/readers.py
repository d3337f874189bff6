"""Readers for the published data-set layouts: each yields :class:`Record` s.

A record is an image path plus optional annotations. Readers check the
layout first and raise :class:`DatasetNotFoundError` naming the missing file
and where the data set is obtained. Records come in a deterministic (sorted)
order.

* **folder**: every image file under a directory (recursively).
* **CelebA**: ``img_align_celeba/`` + ``list_eval_partition.txt`` (lines
  ``000001.jpg 0``; 0 train, 1 val, 2 test) in the root, or the Drive
  layout ``Img/img_align_celeba/`` + ``Eval/list_eval_partition.txt``, or
  Kaggle's ``list_eval_partition.csv``; ``identity_CelebA.txt`` (root or
  ``Anno/``) gives subject ids when present. Default split: test (2).
* **LFW**: ``lfw/<name>/<name>_NNNN.jpg`` (also ``lfw-deepfunneled``,
  ``lfw_funneled``, or the root itself); subject = ``<name>``.
* **LS3D-W**: images with a 68-point annotation of the same stem: ``.pts``
  (1-based, converted to 0-based), ``.mat`` (key ``pt3d_68`` or ``pts``,
  [2|3, 68] or [68, 2|3]) or ``.t7`` (a serialized torch7 tensor [68, 2]).
  ``.mat``/``.t7`` coordinates are returned as stored.
* **NoW**: ``iphone_pictures/`` + ``imagepaths<split>.txt`` (split
  ``validation`` or ``test``; also under ``final_release_version/``);
  subject and expression type come from the path; ``extra`` holds the
  subject's ``scans/<subject>/*.obj`` and ``scans_lmks_onlypp/<subject>/*.pp``
  (empty when those folders are absent, e.g. for the test split);
  ``face_box`` is NoW's own face box, ``detected_face/<image path>.npy``
  (:func:`read_now_face_box`), when the data set has it.

Landmarks are float32 [68, 2] (x, y) image pixels, x right, y down.

This module is the data layer's bottom: it imports nothing from
:mod:`recon_tf.preprocess` (preprocessing uses the data layer, not the
reverse); ``IMAGE_EXTENSIONS`` and :func:`read_pts` live here.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterator

import numpy as np
from absl import logging

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff",
                    ".webp", ".gif", ".heic", ".heif", ".avif")
SOURCES = {
    "celeba": "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html (Align&Cropped images + "
              "Eval/list_eval_partition.txt)",
    "lfw": "http://vis-www.cs.umass.edu/lfw/ (lfw.tgz or lfw-deepfunneled.tgz)",
    "ls3d": "https://www.adrianbulat.com/face-alignment (LS3D-W, 3D-aligned 68-point annotations)",
    "now": "https://now.is.tue.mpg.de/ (NoW_Dataset: iphone_pictures, imagepathsvalidation.txt, "
           "scans, scans_lmks_onlypp)",
}
CELEBA_SPLITS = {"train": 0, "val": 1, "test": 2}


class DatasetNotFoundError(FileNotFoundError):
    """A data set's file or folder is missing; the message says where to get it."""


@dataclasses.dataclass
class Record:
    """One input image and its annotations.

    Attributes:
      image_path: path of the image file.
      landmarks: float32 [68, 2] ground-truth landmarks, or None.
      subject: identity id ("" if unknown).
      split: data-set split name ("" if none).
      annotation_path: the landmark file the landmarks came from ("" if none).
      extra: other string annotations (e.g. NoW's scan paths).
      face_box: float32 [4] (x, y, w, h) original pixels, a face box the data
        set gives (NoW's ``detected_face``), or None.
    """

    image_path: str
    landmarks: np.ndarray | None = None
    subject: str = ""
    split: str = ""
    annotation_path: str = ""
    extra: dict = dataclasses.field(default_factory=dict)
    face_box: np.ndarray | None = None


def _missing(dataset: str, what: str, tried: list[str]) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset}: missing {what} (looked for: {', '.join(tried)}). "
        f"Obtain the data set from {SOURCES[dataset]}.")


def _first_existing(root: str, candidates: list[str], dataset: str, what: str) -> str:
    paths = [os.path.join(root, c) for c in candidates]
    for path in paths:
        if os.path.exists(path):
            return path
    raise _missing(dataset, what, paths)


def read_pts(path: str, one_based: bool = True) -> np.ndarray:
    """Read an iBUG/menpo ``.pts`` file → float32 [N, 2] (x, y), pixel-centre coordinates.

    ``.pts`` coordinates are 1-based by the common convention (menpo's);
    ``one_based`` subtracts 1.

    Raises:
      ValueError: no ``{ ... }`` block, or an odd number of coordinates.
    """
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    if "{" not in text or "}" not in text:
        raise ValueError(f"{path}: not a .pts file (no '{{ ... }}' block)")
    body = text[text.index("{") + 1:text.rindex("}")]
    values = np.array(body.split(), np.float64)
    if values.size % 2:
        raise ValueError(f"{path}: odd number of coordinates")
    points = values.reshape(-1, 2) - (1.0 if one_based else 0.0)
    return points.astype(np.float32)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_folder(root: str, recursive: bool = True, images_only: bool = True) -> Iterator[Record]:
    """Files under ``root``: those with an image extension (``IMAGE_EXTENSIONS``),
    or every file when ``images_only`` is False (so a caller can report the others)."""
    for path in list_files(root, recursive, images_only=images_only):
        yield Record(path)


def list_files(root: str, recursive: bool = True, images_only: bool = False) -> list[str]:
    """Sorted file paths under ``root`` (hidden files skipped)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"input folder not found: {root}")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and (_is_image(name) or not images_only):
                paths.append(os.path.join(dirpath, name))
        if not recursive:
            break
    return sorted(paths)


def _read_partition(path: str) -> dict[str, int]:
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        if path.endswith(".csv"):
            for row in csv.DictReader(f):
                out[row["image_id"]] = int(row["partition"])
        else:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].lstrip("-").isdigit():
                    out[parts[0]] = int(parts[1])
    return out


def read_celeba(root: str, split: str = "test") -> Iterator[Record]:
    """CelebA aligned images of one split (``train``, ``val``, ``test`` or ``all``)."""
    if split not in CELEBA_SPLITS and split != "all":
        raise ValueError(f"CelebA split must be one of {list(CELEBA_SPLITS) + ['all']}")
    images = _first_existing(root, ["img_align_celeba/img_align_celeba", "img_align_celeba",
                                    "Img/img_align_celeba"], "celeba", "image folder")
    partition = _read_partition(_first_existing(
        root, ["list_eval_partition.txt", "Eval/list_eval_partition.txt",
               "list_eval_partition.csv"], "celeba", "split file"))
    identity = {}
    for candidate in ("identity_CelebA.txt", "Anno/identity_CelebA.txt"):
        if os.path.exists(os.path.join(root, candidate)):
            identity = {k: str(v) for k, v in
                        _read_partition(os.path.join(root, candidate)).items()}
    names = {v: k for k, v in CELEBA_SPLITS.items()}
    for name in sorted(partition):
        code = partition[name]
        if split != "all" and code != CELEBA_SPLITS[split]:
            continue
        yield Record(os.path.join(images, name), subject=identity.get(name, ""),
                     split=names.get(code, str(code)))


_LFW_NAME = re.compile(r"^(?P<name>.+)_(?P<num>\d{4})$")


def read_lfw(root: str) -> Iterator[Record]:
    """LFW images ``<name>/<name>_NNNN.jpg``; subject = ``<name>``."""
    base = None
    for candidate in ("lfw", "lfw-deepfunneled", "lfw_funneled", ""):
        folder = os.path.join(root, candidate)
        if os.path.isdir(folder) and any(
                os.path.isdir(os.path.join(folder, d)) and _has_lfw_images(folder, d)
                for d in os.listdir(folder)):
            base = folder
            break
    if base is None:
        raise _missing("lfw", "the image folder lfw/<name>/<name>_NNNN.jpg",
                       [os.path.join(root, c) for c in ("lfw", "lfw-deepfunneled", "")])
    for person in sorted(os.listdir(base)):
        folder = os.path.join(base, person)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            match = _LFW_NAME.match(os.path.splitext(name)[0])
            if _is_image(name) and match and match["name"] == person:
                yield Record(os.path.join(folder, name), subject=person)


def _has_lfw_images(base: str, person: str) -> bool:
    folder = os.path.join(base, person)
    return any(n.startswith(person + "_") and _is_image(n) for n in os.listdir(folder))


LANDMARK_EXTENSIONS = (".pts", ".mat", ".t7", ".ljson")


def read_ls3dw(root: str, require_annotation: bool = True) -> Iterator[Record]:
    """LS3D-W images with their 68-point annotations (``.pts``, ``.mat``, ``.t7``;
    also menpo's ``.ljson``, so any such folder of annotated photos reads the same).

    An image whose annotation cannot be read as 68 points (corrupt, or another
    scheme) is skipped with a logged warning."""
    if not os.path.isdir(root):
        raise _missing("ls3d", "the data-set folder", [root])
    found = False
    for path in list_files(root, images_only=True):
        stem = os.path.splitext(path)[0]
        annotation = next((stem + ext for ext in LANDMARK_EXTENSIONS
                           if os.path.exists(stem + ext)), "")
        if not annotation and require_annotation:
            continue
        landmarks = None
        if annotation:
            try:
                landmarks = read_landmark_file(annotation)
            except (ValueError, OSError) as err:  # e.g. menpo's 19-point tongue.pts
                logging.warning("skipped %s: %s", path, err)
                continue
        found = True
        split = os.path.relpath(os.path.dirname(path), root).split(os.sep)[0]
        yield Record(path, landmarks=landmarks, split="" if split == "." else split,
                     annotation_path=annotation)
    if not found:
        raise _missing("ls3d", "images with .pts/.mat/.t7/.ljson annotations of the same name",
                       [root])


def read_landmark_file(path: str) -> np.ndarray:
    """Read 68 2D landmarks from ``.pts``, ``.mat``, ``.t7`` or ``.ljson`` → float32 [68, 2]."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".pts":
        points = read_pts(path)
    elif ext == ".mat":
        from scipy.io import loadmat

        data = loadmat(path)
        key = next((k for k in ("pt3d_68", "pts", "pt2d") if k in data), None)
        if key is None:
            raise ValueError(f"{path}: no 'pt3d_68' or 'pts' key (keys: {sorted(data)})")
        points = np.asarray(data[key], np.float64)
    elif ext == ".t7":
        points = read_t7_tensor(path)
    elif ext == ".ljson":
        points = read_ljson(path)
    else:
        raise ValueError(f"{path}: unsupported landmark file type {ext!r}")
    if points.ndim == 2 and points.shape[0] in (2, 3) and points.shape[1] == 68:
        points = points.T
    if points.ndim != 2 or points.shape[0] != 68 or points.shape[1] < 2:
        raise ValueError(f"{path}: expected 68 points, got shape {points.shape}")
    return np.asarray(points[:, :2], np.float32)


def read_ljson(path: str, num_points: int = 68) -> np.ndarray:
    """Read menpo's landmark JSON (``.ljson``, versions 2 and 3) → float32 [N, 2] (x, y).

    Version 3 holds named groups (``{"groups": {name: {"landmarks": {"points":
    ...}}}}``), version 2 one group (``{"landmarks": {"points": ...}}``). menpo
    stores each point as (y, x), 0-based with pixel centres at integers (its
    ``.pts`` importer subtracts 1), so the result is in this module's
    convention without a shift. The first group with ``num_points`` points is
    read (0: the first group).

    Raises:
      ValueError: not JSON, another version, or no group of ``num_points`` points.
    """
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a menpo .ljson file ({err})") from err
    version = data.get("version") if isinstance(data, dict) else None
    if version == 3:
        groups = [g.get("landmarks", {}).get("points") for g in data.get("groups", {}).values()]
    elif version == 2:
        groups = [data.get("landmarks", {}).get("points")]
    else:
        raise ValueError(f"{path}: menpo .ljson version {version!r}; versions 2 and 3 are read")
    for points in groups:
        pts = np.asarray(points if points is not None else [], np.float64)
        if pts.ndim == 2 and pts.shape[1] == 2 and (num_points in (0, len(pts))):
            return pts[:, ::-1].astype(np.float32)
    raise ValueError(f"{path}: no group of {num_points} 2D points")


_T7_DTYPES = {"Float": "<f4", "Double": "<f8", "Long": "<i8", "Int": "<i4", "Short": "<i2",
              "Byte": "u1", "Char": "i1"}


def read_t7_tensor(path: str) -> np.ndarray:
    """Read a torch7 binary file holding one tensor (as LS3D-W's ``.t7`` files do).

    Format (little-endian, 64-bit longs): int type (4 = torch object), int
    reference index, string version ``"V 1"`` (int length + bytes), string
    class name (e.g. ``torch.FloatTensor``), int ndim, long sizes[ndim], long
    strides[ndim], long storage offset (1-based), then the storage object:
    int type, int index, version, class name (``torch.FloatStorage``), long
    size, raw elements.
    """
    with open(path, "rb") as f:
        data = f.read()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    def read_class() -> str:
        (kind,) = take("<i")
        if kind != 4:
            raise ValueError(f"{path}: expected a torch object, got type {kind}")
        take("<i")
        (length,) = take("<i")
        name = bytes(take(f"<{length}s")[0]).decode("ascii")
        if name.startswith("V "):
            (length,) = take("<i")
            name = bytes(take(f"<{length}s")[0]).decode("ascii")
        return name

    try:
        tensor_class = read_class()
        match = re.fullmatch(r"torch\.(\w+)Tensor", tensor_class)
        if not match or match[1] not in _T7_DTYPES:
            raise ValueError(f"{path}: unsupported torch class {tensor_class!r}")
        (ndim,) = take("<i")
        sizes = take(f"<{ndim}q")
        strides = take(f"<{ndim}q")
        (offset,) = take("<q")
        read_class()
        (count,) = take("<q")
        dtype = np.dtype(_T7_DTYPES[match[1]])
        storage = np.frombuffer(data, dtype, count, pos)
    except struct.error as err:
        raise ValueError(f"{path}: truncated torch7 file") from err
    return np.lib.stride_tricks.as_strided(
        storage[offset - 1:], sizes, [s * dtype.itemsize for s in strides]).astype(np.float64)


def read_now(root: str, split: str = "validation") -> Iterator[Record]:
    """NoW images of a split (``validation`` or ``test``) with their scan paths."""
    base = root
    if not os.path.isdir(os.path.join(root, "iphone_pictures")):
        base = os.path.join(root, "final_release_version")
    pictures = _first_existing(base, ["iphone_pictures"], "now", "the image folder")
    listing = _first_existing(base, [f"imagepaths{split}.txt"], "now", f"the {split} image list")
    with open(listing, encoding="utf-8") as f:
        rel_paths = [line.strip() for line in f if line.strip()]
    for rel in rel_paths:
        parts = rel.replace("\\", "/").split("/")
        subject = parts[0]
        scans = sorted(glob.glob(os.path.join(base, "scans", subject, "*.obj")))
        lmks = sorted(glob.glob(os.path.join(base, "scans_lmks_onlypp", subject, "*.pp")))
        extra = {"expression": parts[1] if len(parts) > 2 else "",
                 "scan_path": scans[0] if scans else "",
                 "scan_landmarks_path": lmks[0] if lmks else ""}
        box_path = os.path.join(base, "detected_face", *parts[:-1],
                                os.path.splitext(parts[-1])[0] + ".npy")
        yield Record(os.path.join(pictures, *parts), subject=subject, split=split, extra=extra,
                     face_box=read_now_face_box(box_path) if os.path.exists(box_path) else None)


def read_now_face_box(path: str) -> np.ndarray | None:
    """NoW's face box of one image, ``detected_face/<subject>/<type>/<image>.npy``.

    NoW stores a pickled dict ``{"left", "top", "right", "bottom"}`` (pixels of
    the full-size image) per image, the box DECA, RingNet and MICA crop by; a
    plain array ``[left, top, right, bottom]`` is read too. The file is
    unpickled (``allow_pickle``, NoW's own format): read only data sets you trust.

    Returns:
      float32 [4] (x, y, w, h), or None when the file is unreadable or the box
      is not a finite box of positive size.
    """
    try:
        data = np.load(path, allow_pickle=True, encoding="latin1")
        if data.dtype == object and data.shape == ():
            data = data.item()
        if isinstance(data, dict):
            left, top, right, bottom = (float(data[k]) for k in ("left", "top", "right", "bottom"))
        else:
            left, top, right, bottom = (float(v) for v in np.ravel(data)[:4])
    except (OSError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
        return None
    box = np.array([left, top, right - left, bottom - top], np.float32)
    if not np.all(np.isfinite(box)) or box[2] <= 0 or box[3] <= 0:
        return None
    return box


READERS: dict[str, Callable[..., Iterator[Record]]] = {
    "folder": read_folder, "celeba": read_celeba, "lfw": read_lfw, "ls3d": read_ls3dw,
    "now": read_now,
}


def read_dataset(name: str, root: str, split: str | None = None) -> list[Record]:
    """All records of a data set by name (``folder``, ``celeba``, ``lfw``, ``ls3d``, ``now``).

    Args:
      name: reader name.
      root: the data set's root folder.
      split: CelebA (default ``test``) or NoW (default ``validation``) split;
        ignored by the other readers.
    """
    if name not in READERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {sorted(READERS)}")
    if name in ("celeba", "now") and split:
        return list(READERS[name](root, split=split))
    return list(READERS[name](root))
