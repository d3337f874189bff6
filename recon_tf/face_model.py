"""The linear 3D morphable model, Eq. (1)-(3) of the paper.

    S = S̄ + B_id α + B_exp β                    (Eq. 1)
    T = T̄ + B_t δ                                (Eq. 2)
    M = {S, T}                                   (Eq. 3)

The library reads one file format, the *recon_tf face-model file* (``.npz``),
written by the converters in the top-level ``bfm`` package (ICT-FaceKit, BFM
2009 + FaceWarehouse / 3DDFA expressions, Deep3DFace's ``BFM_model_front.mat``).
Keys (N vertices, T triangles, U UV points, K_* modes):

==================  =================  =============================================
key                 shape, dtype       meaning
==================  =================  =============================================
``mean_shape``      [N, 3] float32     S̄ in decimetres; x to image right, y up,
                                       z towards the camera; centred at the origin
``id_basis``        [K_id, N, 3] f32   B_id, pre-scaled so that α ~ N(0, 1)
``exp_basis``       [K_exp, N, 3] f32  B_exp (ICT: blendshape deltas, β in [0, 1];
                                       BFM/FaceWarehouse: PCA, β ~ N(0, 1))
``mean_albedo``     [N, 3] float32     T̄, linear RGB in [0, 1]
``albedo_basis``    [K_tex, N, 3] f32  B_t, pre-scaled so that δ ~ N(0, 1)
``triangles``       [T, 3] int32       vertex ids, counter-clockwise seen from outside
``uv``              [U, 2] float32     UV points in [0, 1]² (v up)
``tri_uv``          [T, 3] int32       per-corner UV ids (UV layouts may have seams)
``lmk68``           [68] int32         Multi-PIE 68-point vertex ids
``skin_mask``       [N] float32        1 on face skin used by the photometric loss
``name``            str                model name, e.g. ``"ict_facekit"``
==================  =================  =============================================

:class:`FaceModel` holds these as TF constants and computes batched,
differentiable vertex positions, albedo, normals and landmarks.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np
import tensorflow as tf

from recon_tf.coeffs import CoeffLayout

REQUIRED_KEYS = {
    "mean_shape": (None, 3), "id_basis": (None, None, 3), "exp_basis": (None, None, 3),
    "mean_albedo": (None, 3), "albedo_basis": (None, None, 3), "triangles": (None, 3),
    "uv": (None, 2), "tri_uv": (None, 3), "lmk68": (68,), "skin_mask": (None,),
}


class FaceModelFormatError(ValueError):
    """A face-model file or array set is malformed (the message says how)."""


def validate_arrays(arrays: dict) -> None:
    """Check keys, shapes and index ranges of a face-model array dict.

    Raises:
      FaceModelFormatError: naming the first offending key.
    """
    missing = [k for k in REQUIRED_KEYS if k not in arrays]
    if missing:
        raise FaceModelFormatError(f"face model is missing keys {missing}")
    for key, expected in REQUIRED_KEYS.items():
        shape = np.shape(arrays[key])
        if len(shape) != len(expected) or any(
                e is not None and s != e for s, e in zip(shape, expected)):
            raise FaceModelFormatError(
                f"face model key '{key}' has shape {shape}, expected {expected} "
                "(None = any size)")
    n = arrays["mean_shape"].shape[0]
    for key in ("id_basis", "exp_basis", "albedo_basis"):
        if arrays[key].shape[1] != n:
            raise FaceModelFormatError(
                f"'{key}' has {arrays[key].shape[1]} vertices, mean_shape has {n}")
    for key in ("mean_albedo", "skin_mask"):
        if arrays[key].shape[0] != n:
            raise FaceModelFormatError(f"'{key}' has {arrays[key].shape[0]} rows, expected {n}")
    for key, limit in (("triangles", n), ("lmk68", n), ("tri_uv", arrays["uv"].shape[0])):
        idx = np.asarray(arrays[key])
        if idx.size and (idx.min() < 0 or idx.max() >= limit):
            raise FaceModelFormatError(
                f"'{key}' indexes out of range [0, {limit}): min {idx.min()}, max {idx.max()}")
    if arrays["triangles"].shape[0] != arrays["tri_uv"].shape[0]:
        raise FaceModelFormatError("'triangles' and 'tri_uv' must have the same length")
    for key in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis", "uv"):
        if not np.all(np.isfinite(arrays[key])):
            raise FaceModelFormatError(f"'{key}' contains NaN or Inf")


def save_face_model(path: str, arrays: dict) -> None:
    """Validate and write a face-model dict to ``path`` (``.npz``)."""
    validate_arrays(arrays)
    out = {k: np.asarray(v) for k, v in arrays.items()}
    for key in ("triangles", "tri_uv", "lmk68"):
        out[key] = out[key].astype(np.int32)
    for key in ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis", "uv",
                "skin_mask"):
        out[key] = out[key].astype(np.float32)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)


def load_face_model_arrays(path: str) -> dict:
    """Read a face-model ``.npz`` into a dict of numpy arrays, validated.

    Raises:
      AssetMissingError: the file does not exist.
      FaceModelFormatError: the file is not a readable face model.
    """
    from recon_tf.assets import require_file

    require_file(path, "face-model file (.npz)",
                 "a converter in the `bfm` package, e.g. `python -m bfm.convert --help`")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise FaceModelFormatError(f"cannot read face model {path}: {err}") from err
    if "name" in arrays:
        arrays["name"] = str(arrays["name"])
    validate_arrays(arrays)
    return arrays


class FaceModel:
    """A linear 3DMM as TF constants, with the coefficient layout it uses.

    Args:
      arrays: a face-model dict (see module docstring).
      layout: the coefficient layout; by default the paper's 80/29/80 clipped
        to the number of modes the model has.
    """

    def __init__(self, arrays: dict, layout: CoeffLayout | None = None):
        validate_arrays(arrays)
        n_id, n_exp, n_tex = (arrays[k].shape[0] for k in ("id_basis", "exp_basis",
                                                            "albedo_basis"))
        self.layout = layout or CoeffLayout.for_model(n_id, n_exp, n_tex)
        for dim, avail, name in ((self.layout.id_dim, n_id, "identity"),
                                 (self.layout.exp_dim, n_exp, "expression"),
                                 (self.layout.tex_dim, n_tex, "albedo")):
            if dim > avail:
                raise ValueError(f"layout asks for {dim} {name} modes; the model has {avail}")
        self.name = str(arrays.get("name", "face_model"))
        self.num_vertices = int(arrays["mean_shape"].shape[0])
        self.arrays = arrays

        def basis(key: str, k: int) -> tf.Tensor:
            b = np.asarray(arrays[key][:k], np.float32).reshape(k, -1)
            return tf.constant(b)

        self.mean_shape = tf.constant(arrays["mean_shape"], tf.float32)
        self.id_basis = basis("id_basis", self.layout.id_dim)
        self.exp_basis = basis("exp_basis", self.layout.exp_dim)
        self.mean_albedo = tf.constant(arrays["mean_albedo"], tf.float32)
        self.albedo_basis = basis("albedo_basis", self.layout.tex_dim)
        self.triangles = tf.constant(arrays["triangles"], tf.int32)
        self.uv = tf.constant(arrays["uv"], tf.float32)
        self.tri_uv = tf.constant(arrays["tri_uv"], tf.int32)
        self.lmk68 = tf.constant(arrays["lmk68"], tf.int32)
        self.skin_mask = tf.constant(arrays["skin_mask"], tf.float32)

    @classmethod
    def from_file(cls, path: str, layout: CoeffLayout | None = None) -> FaceModel:
        """Load a face-model ``.npz`` written by a ``bfm`` converter."""
        return cls(load_face_model_arrays(path), layout)

    # ----------------------------------------------------------------- Eq. 1
    def shape(self, identity: tf.Tensor, expression: tf.Tensor) -> tf.Tensor:
        """S = S̄ + B_id α + B_exp β (Eq. 1).

        Args:
          identity: α, float32 [B, id_dim].
          expression: β, float32 [B, exp_dim].
        Returns:
          vertices, float32 [B, N, 3] in decimetres (model space).
        """
        identity = _check_coeffs(identity, self.layout.id_dim, "identity")
        expression = _check_coeffs(expression, self.layout.exp_dim, "expression")
        offset = tf.matmul(identity, self.id_basis) + tf.matmul(expression, self.exp_basis)
        return self.mean_shape[None] + tf.reshape(offset, [-1, self.num_vertices, 3])

    # ----------------------------------------------------------------- Eq. 2
    def albedo(self, albedo_coeffs: tf.Tensor) -> tf.Tensor:
        """T = T̄ + B_t δ (Eq. 2).

        Args:
          albedo_coeffs: δ, float32 [B, tex_dim].
        Returns:
          per-vertex albedo, float32 [B, N, 3], linear RGB, nominally in [0, 1]
          (not clipped, so gradients stay alive).
        """
        albedo_coeffs = _check_coeffs(albedo_coeffs, self.layout.tex_dim, "albedo")
        offset = tf.matmul(albedo_coeffs, self.albedo_basis)
        return self.mean_albedo[None] + tf.reshape(offset, [-1, self.num_vertices, 3])

    # ----------------------------------------------------------------- Eq. 3
    def compute(self, coeffs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """M = {S, T} from flat coefficients (Eq. 3).

        Args:
          coeffs: float32 [B, layout.total].
        Returns:
          (vertices [B, N, 3] in model space, albedo [B, N, 3]).
        """
        c = self.layout.split(coeffs)
        return self.shape(c.identity, c.expression), self.albedo(c.albedo)

    def vertex_normals(self, vertices: tf.Tensor) -> tf.Tensor:
        """Area-weighted unit vertex normals.

        Args:
          vertices: float32 [B, N, 3].
        Returns:
          float32 [B, N, 3], unit length, pointing out of the face.
        """
        return vertex_normals(vertices, self.triangles)

    def landmarks(self, vertices: tf.Tensor) -> tf.Tensor:
        """The 68 landmark vertices, float32 [B, 68, 3], of vertices [B, N, 3]."""
        return tf.gather(vertices, self.lmk68, axis=1)

    def mean_landmarks_3d(self) -> np.ndarray:
        """The mean shape's 68 landmarks, numpy float32 [68, 3] (decimetres)."""
        return np.asarray(self.arrays["mean_shape"][self.arrays["lmk68"]], np.float32)

    def vertex_uv(self) -> np.ndarray:
        """One UV per vertex (mean of its corners' UVs), numpy float32 [N, 2]."""
        tris = np.asarray(self.arrays["triangles"]).reshape(-1)
        corners = np.asarray(self.arrays["uv"])[np.asarray(self.arrays["tri_uv"]).reshape(-1)]
        total = np.zeros((self.num_vertices, 2), np.float64)
        count = np.zeros((self.num_vertices,), np.float64)
        np.add.at(total, tris, corners)
        np.add.at(count, tris, 1.0)
        return (total / np.maximum(count, 1.0)[:, None]).astype(np.float32)


def vertex_normals(vertices: tf.Tensor, triangles: tf.Tensor) -> tf.Tensor:
    """Area-weighted unit vertex normals of a batch of meshes.

    Args:
      vertices: float32 [B, N, 3].
      triangles: int32 [T, 3], counter-clockwise seen from outside.
    Returns:
      float32 [B, N, 3] unit normals (zero-area neighbourhoods get a zero
      vector instead of NaN).
    """
    vertices = tf.convert_to_tensor(vertices, tf.float32)
    triangles = tf.convert_to_tensor(triangles, tf.int32)
    v0, v1, v2 = (tf.gather(vertices, triangles[:, i], axis=1) for i in range(3))
    face_n = tf.linalg.cross(v1 - v0, v2 - v0)  # [B, T, 3], length = 2 * area
    n = tf.shape(vertices)[1]
    flat_ids = tf.reshape(tf.transpose(triangles), [-1])  # [3T]
    contrib = tf.tile(tf.transpose(face_n, [1, 0, 2]), [3, 1, 1])  # [3T, B, 3]
    summed = tf.math.unsorted_segment_sum(contrib, flat_ids, n)  # [N, B, 3]
    summed = tf.transpose(summed, [1, 0, 2])
    return tf.math.divide_no_nan(summed, tf.norm(summed, axis=-1, keepdims=True) + 1e-12)


def _check_coeffs(x: tf.Tensor, dim: int, name: str) -> tf.Tensor:
    x = tf.convert_to_tensor(x, tf.float32)
    if x.shape.rank != 2 or (x.shape[-1] is not None and x.shape[-1] != dim):
        raise ValueError(f"{name} coefficients must have shape [B, {dim}], got {x.shape}")
    return x


def default_face_model_path() -> str:
    """Path of the default face model (ICT-FaceKit face region in the assets)."""
    from recon_tf.assets import asset_path

    return asset_path("face_models/ict_facekit/ict_face_region_9409.npz")


def load_face_model(path: str | None = None, layout: CoeffLayout | None = None) -> FaceModel:
    """Load a face model.

    Args:
      path: a recon_tf face-model ``.npz``; or ``None`` for the default,
        ICT-FaceKit's face region from the assets (converted on the fly by
        :func:`bfm.ict.load_ict_npz`, with our default albedo basis).
        An ICT-style npz (keys ``mean``/``id_basis``/``tris``…) is also
        accepted and converted.
      layout: coefficient layout (default: paper dims clipped to the model).
    """
    if path is None:
        path = default_face_model_path()
    from recon_tf.assets import require_file

    require_file(path, "face-model file (.npz)",
                 "a converter in the `bfm` package (see bfm/README.md)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise FaceModelFormatError(f"cannot read face model {path}: {err}") from err
    if "tris" in keys and "mean" in keys:
        from bfm.ict import load_ict_npz

        return FaceModel(load_ict_npz(path), layout)
    return FaceModel.from_file(path, layout)
