"""The linear 3D morphable model, Eq. (1)-(3) of the paper.

    S = S̄ + B_id α + B_exp β                    (Eq. 1)
    T = T̄ + B_t δ                                (Eq. 2)
    M = {S, T}                                   (Eq. 3)

The library reads one file format, the *recon_tf face-model file* (``.npz``),
written by the converters in the top-level ``bfm`` package (ICT-FaceKit, BFM
2009 + FaceWarehouse / 3DDFA expressions, Deep3DFace's ``BFM_model_front.mat``;
``bfm.load_default_face_model()`` converts and caches the default ICT model).
The library never imports ``bfm``. Keys (N vertices, T triangles, U UV points,
K_* modes); the last four are optional, so older files still load:

======================  =================  ==========================================
key                     shape, dtype       meaning
======================  =================  ==========================================
``mean_shape``          [N, 3] float32     S̄ in decimetres; x to image right, y up,
                                           z towards the camera; centred at the origin
``id_basis``            [K_id, N, 3] f32   B_id, pre-scaled so that α ~ N(0, 1)
``exp_basis``           [K_exp, N, 3] f32  B_exp (ICT: blendshape deltas, β in [0, 1];
                                           BFM/FaceWarehouse: PCA, β ~ N(0, 1))
``mean_albedo``         [N, 3] float32     T̄, sRGB-encoded display values in [0, 1]
                                           (the space of the photos; see below)
``albedo_basis``        [K_tex, N, 3] f32  B_t, pre-scaled so that δ ~ N(0, 1)
``triangles``           [T, 3] int32       vertex ids, counter-clockwise seen from outside
``uv``                  [U, 2] float32     UV points in [0, 1]² (v up)
``tri_uv``              [T, 3] int32       per-corner UV ids (UV layouts may have seams)
``lmk68``               [68] int32         Multi-PIE 68-point vertex ids
``skin_mask``           [N] float32        in [0, 1]: face skin for the photometric
                                           loss (ICT: the front mask without brows,
                                           lash lines, nostrils and the lip line)
``name``                str                model name, e.g. ``"ict_facekit"``
``front_mask``          [N] float32        optional; in [0, 1]: the front face,
                                           forehead to chin, ear to ear, without
                                           scalp, ears or neck (absent: all ones,
                                           e.g. BFM's front face)
``exp_bounds``          [K_exp, 2] f32     optional; (low, high) of each β (ICT
                                           blendshapes: [0, 1]); absent for PCA
                                           expressions, which are unbounded
``exp_names``           [K_exp] str        optional; expression names (ICT's
                                           blendshape names)
``albedo_provenance``   str                optional; how the albedo basis was made
                                           (absent: ``"unknown"``)
``jawline``             [17] int32         optional; per iBUG jaw point, the vertex
                                           of the jaw-bone outline seen on the side
                                           turned towards the camera (−1: none;
                                           :mod:`recon_tf.landmarks`)
``lmk68_output``        [68] int32         optional; the vertices the main job
                                           reports as points 17–67 of
                                           ``landmarks68.txt``: where 2D detectors
                                           and iBUG annotators put each point on
                                           fitted faces (absent: ``lmk68``;
                                           :func:`recon_tf.landmarks.calibrate_output_landmarks`)
======================  =================  ==========================================

Colour space: albedo, rendered images and photos are all in the same
sRGB-encoded [0, 1] space as the input photos, as in Deep3DFace and BFM (whose
textures are photo pixel values); the library applies no transfer function
(no gamma, no linearisation) anywhere.

:class:`FaceModel` holds these as TF constants and computes batched,
differentiable vertex positions, albedo, normals and landmarks.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile

import numpy as np
import tensorflow as tf

from recon_tf.coeffs import CoeffLayout

REQUIRED_KEYS = {
    "mean_shape": (None, 3), "id_basis": (None, None, 3), "exp_basis": (None, None, 3),
    "mean_albedo": (None, 3), "albedo_basis": (None, None, 3), "triangles": (None, 3),
    "uv": (None, 2), "tri_uv": (None, 3), "lmk68": (68,), "skin_mask": (None,),
}
OPTIONAL_KEYS = {"front_mask": (None,), "exp_bounds": (None, 2), "exp_names": (None,),
                 "jawline": (17,), "lmk68_output": (68,)}
FLOAT_KEYS = ("mean_shape", "id_basis", "exp_basis", "mean_albedo", "albedo_basis", "uv",
              "skin_mask", "front_mask", "exp_bounds")
STRING_KEYS = ("name", "albedo_provenance")
GEOMETRY_HASH_KEYS = ("mean_shape", "triangles", "lmk68")
DEFAULT_MODEL_HINT = ("use `bfm.load_default_face_model()` (or `bfm.default_face_model_path()`) "
                      "for the default ICT-FaceKit model, or convert a model with "
                      "`python -m bfm.convert` (see `python -m bfm.convert --help`)")


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
    _validate_optional(arrays)


def _validate_optional(arrays: dict) -> None:
    """Shapes and values of the optional keys that are present."""
    rows = {"front_mask": arrays["mean_shape"].shape[0],
            "exp_bounds": arrays["exp_basis"].shape[0],
            "exp_names": arrays["exp_basis"].shape[0], "jawline": 17, "lmk68_output": 68}
    for key, expected in OPTIONAL_KEYS.items():
        if key not in arrays:
            continue
        shape = np.shape(arrays[key])
        want = (rows[key],) + expected[1:]
        if shape != want:
            raise FaceModelFormatError(f"face model key '{key}' has shape {shape}, "
                                       f"expected {want}")
    if "exp_bounds" in arrays:
        bounds = np.asarray(arrays["exp_bounds"], np.float64)
        if np.isnan(bounds).any() or np.any(bounds[:, 0] > bounds[:, 1]):
            raise FaceModelFormatError("'exp_bounds' rows must be (low, high) with low <= high")
    if "jawline" in arrays:
        jaw = np.asarray(arrays["jawline"])
        if jaw.min() < -1 or jaw.max() >= arrays["mean_shape"].shape[0]:
            raise FaceModelFormatError("'jawline' ids must be -1 or vertex ids")
    if "lmk68_output" in arrays:
        ids = np.asarray(arrays["lmk68_output"])
        if ids.min() < 0 or ids.max() >= arrays["mean_shape"].shape[0]:
            raise FaceModelFormatError("'lmk68_output' must hold vertex ids")
    if "front_mask" in arrays and not np.all(np.isfinite(arrays["front_mask"])):
        raise FaceModelFormatError("'front_mask' contains NaN or Inf")


def save_face_model(path: str, arrays: dict) -> None:
    """Validate and write a face-model dict to ``path`` (``.npz``) atomically: a
    unique temporary file in the same folder, then a rename, so concurrent
    writers of one path never leave a partial file."""
    validate_arrays(arrays)
    out = {k: np.asarray(v) for k, v in arrays.items()}
    for key in ("triangles", "tri_uv", "lmk68"):
        out[key] = out[key].astype(np.int32)
    for key in FLOAT_KEYS:
        if key in out:
            out[key] = out[key].astype(np.float32)
    for key in ("jawline", "lmk68_output"):
        if key in out:
            out[key] = out[key].astype(np.int32)
    if "exp_names" in out:
        out["exp_names"] = out["exp_names"].astype(str)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **out)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_face_model_arrays(path: str) -> dict:
    """Read a recon_tf face-model ``.npz`` into a dict of numpy arrays, validated.

    String keys (``name``, ``albedo_provenance``) come back as ``str``.

    Raises:
      AssetMissingError: the file does not exist.
      FaceModelFormatError: the file is not a readable recon_tf face model
        (an unconverted ICT-FaceKit npz: the message says how to convert it).
    """
    from recon_tf.assets import require_file

    require_file(path, "face-model file (.npz)", DEFAULT_MODEL_HINT)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise FaceModelFormatError(f"cannot read face model {path}: {err}") from err
    if "mean" in arrays and "tris" in arrays and "mean_shape" not in arrays:
        raise FaceModelFormatError(
            f"{path} is an ICT-FaceKit npz, not a recon_tf face model: convert it with "
            f"`python -m bfm.convert --source=ict --input={path} --output=ict.npz`, or "
            f"{DEFAULT_MODEL_HINT}")
    for key in STRING_KEYS:
        if key in arrays:
            arrays[key] = str(arrays[key])
    validate_arrays(arrays)
    return arrays


def vertex_uv(triangles: np.ndarray, tri_uv: np.ndarray, uv: np.ndarray,
              num_vertices: int) -> np.ndarray:
    """One UV per vertex: the mean of the UVs of its triangle corners.

    Args:
      triangles: int [T, 3] vertex ids; tri_uv: int [T, 3] UV ids; uv: float [U, 2].
      num_vertices: N.
    Returns:
      float32 [N, 2] (a vertex in no triangle gets (0, 0)).
    """
    tris = np.asarray(triangles).reshape(-1)
    corners = np.asarray(uv, np.float64)[np.asarray(tri_uv).reshape(-1)]
    total = np.zeros((num_vertices, 2), np.float64)
    count = np.zeros((num_vertices,), np.float64)
    np.add.at(total, tris, corners)
    np.add.at(count, tris, 1.0)
    return (total / np.maximum(count, 1.0)[:, None]).astype(np.float32)


def geometry_hash(arrays: dict) -> str:
    """SHA-1 (hex) of a face model's geometry: mean shape, triangles and landmark
    ids, i.e. what crop alignment and landmarks depend on. A new albedo basis
    or other modes leave it unchanged, so preprocessed data stays valid."""
    digest = hashlib.sha1()
    for key in GEOMETRY_HASH_KEYS:
        dtype = np.float32 if key == "mean_shape" else np.int32
        value = np.ascontiguousarray(arrays[key], dtype)
        digest.update(key.encode() + str(value.shape).encode() + value.tobytes())
    return digest.hexdigest()


class FaceModel:
    """A linear 3DMM as TF constants, with the coefficient layout it uses.

    Args:
      arrays: a face-model dict (see module docstring).
      layout: the coefficient layout; by default the paper's 80/29/80 clipped
        to the number of modes the model has.

    Attributes (besides the file's keys as TF constants, bases flattened to
    [K, 3N] and cut to the layout):
      front_mask: float32 [N] in [0, 1] (all ones when the file has none).
      exp_bounds: float32 [exp_dim, 2] (low, high) of each β, or None for
        unbounded (PCA) expressions.
      exp_names: list of str, the expression names (may be empty).
      albedo_provenance: str, how the albedo basis was made.
      lmk68_output: int32 [68] numpy, the vertices reported as points 17–67 of
        ``landmarks68.txt`` (``lmk68`` when the file has none).
      geometry_hash: str, :func:`geometry_hash` of the model.
      name: str; num_vertices: int; arrays: the numpy dict.
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
        self.lmk68_output = np.asarray(arrays.get("lmk68_output", arrays["lmk68"]), np.int32)
        self.skin_mask = tf.constant(arrays["skin_mask"], tf.float32)
        self.front_mask = tf.constant(arrays.get("front_mask", np.ones(self.num_vertices)),
                                      tf.float32)
        bounds = arrays.get("exp_bounds")
        self.exp_bounds = (None if bounds is None else
                           tf.constant(np.asarray(bounds)[:self.layout.exp_dim], tf.float32))
        names = arrays.get("exp_names")
        self.exp_names = [] if names is None else [str(n) for n in names]
        self.albedo_provenance = str(arrays.get("albedo_provenance", "unknown"))
        self.geometry_hash = geometry_hash(arrays)

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
          per-vertex albedo, float32 [B, N, 3], sRGB-encoded display values,
          nominally in [0, 1] (not clipped, so gradients stay alive).
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
        a = self.arrays
        return vertex_uv(a["triangles"], a["tri_uv"], a["uv"], self.num_vertices)


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


def load_face_model(path: str | None, layout: CoeffLayout | None = None) -> FaceModel:
    """Load a recon_tf face-model file (``.npz``, written by a ``bfm`` converter).

    Args:
      path: the file; required (the library has no default model of its own:
        ``bfm.load_default_face_model()`` converts and caches ICT-FaceKit).
      layout: coefficient layout (default: paper dims clipped to the model).
    Raises:
      ValueError: ``path`` is None or empty.
      AssetMissingError: the file does not exist.
      FaceModelFormatError: the file is not a recon_tf face model.
    """
    if not path:
        raise ValueError(f"load_face_model needs the path of a face-model file; "
                         f"{DEFAULT_MODEL_HINT}")
    return FaceModel.from_file(path, layout)
