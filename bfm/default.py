"""The default face model: ICT-FaceKit from the shared assets, converted once and cached.

The library (:mod:`recon_tf.face_model`) reads only recon_tf face-model files.
:func:`default_face_model_path` converts the assets' ICT-FaceKit face region
(``face_models/ict_facekit/ict_face_region_9409.npz``) with
:func:`bfm.ict.load_ict_npz` into such a file in the cache folder
(``$RECON_TF_CACHE``, default ``~/.cache/recon_tf``) and returns its path.

The cached file's name holds a key made of ``CONVERTER_VERSION``, a hash of
the converter's own source files (``bfm/ict.py``, ``albedo.py``,
``regions.py``, this file), and the source npz's size and modification time:
a new converter or a changed source file gives a new name, hence a new
conversion; an unchanged one is reused. Writing is atomic (a unique
temporary file, then a rename), so concurrent processes may race safely.
"""

from __future__ import annotations

import hashlib
import os

from recon_tf.assets import asset_path
from recon_tf.coeffs import CoeffLayout
from recon_tf.face_model import FaceModel, load_face_model, save_face_model

CONVERTER_VERSION = 2
ICT_ASSET = "face_models/ict_facekit/ict_face_region_9409.npz"
CACHE_ENV_VAR = "RECON_TF_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "recon_tf")
_CONVERTER_FILES = ("ict.py", "albedo.py", "regions.py", "default.py")


def cache_dir() -> str:
    """The cache folder: ``$RECON_TF_CACHE`` or ``~/.cache/recon_tf`` (not created)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(CACHE_ENV_VAR)
                                              or DEFAULT_CACHE_DIR))


def _converter_digest() -> str:
    digest = hashlib.sha1(str(CONVERTER_VERSION).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    for name in _CONVERTER_FILES:
        with open(os.path.join(here, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def cache_key(source: str) -> str:
    """The cache key of a conversion of ``source``: converter version and code,
    source size and modification time (12 hex digits)."""
    stat = os.stat(source)
    digest = hashlib.sha1(f"{_converter_digest()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def default_face_model_path() -> str:
    """Path of the default face model as a recon_tf face-model file.

    Converts the assets' ICT-FaceKit npz on first use (a few seconds) and
    whenever the converter or the source changes; otherwise returns the
    cached file.

    Raises:
      AssetMissingError: the ICT npz is not in the assets (the message says
        where to get it).
    """
    from bfm.ict import load_ict_npz

    source = asset_path(ICT_ASSET)
    path = os.path.join(cache_dir(), f"ict_facekit-v{CONVERTER_VERSION}-{cache_key(source)}.npz")
    if not os.path.exists(path):
        save_face_model(path, load_ict_npz(source))
    return path


def load_default_face_model(layout: CoeffLayout | None = None) -> FaceModel:
    """The default face model (ICT-FaceKit face region, our albedo basis)."""
    return load_face_model(default_face_model_path(), layout)
