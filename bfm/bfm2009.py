"""Basel Face Model 2009 (+ expression bases) → recon_tf face model.

Files users bring (none ships with recon_tf; licences restrict them):

* ``01_MorphableModel.mat`` (BFM 2009, https://faces.dmi.unibas.ch/bfm/ ,
  registration required): ``shapeMU`` [3N, 1], ``shapePC`` [3N, 199],
  ``shapeEV`` [199, 1], ``texMU``, ``texPC``, ``texEV`` (0-255), ``tl``
  [T, 3] 1-based triangles; N = 53490, coordinates in micrometres.
* an expression basis, one of
  - FaceWarehouse PCA as Deep3DFace uses it: ``Exp_Pca.bin`` (int32 n,
    float32 mean [3·53215], float32 components [n · 3·53215] stored
    component-major) with ``std_exp.txt`` (n standard deviations) and
    ``BFM_exp_idx.mat`` (``trimIndex``, 53215 1-based ids into BFM's 53490
    vertices) — from Deep3DFaceReconstruction's BFM folder / the Guo et al.
    CNN-based face modelling release;
  - 3DDFA's ``Model_Expression.mat`` (``mu_exp`` [3·53215, 1], ``w_exp``
    [3·53215, 29], optional ``sigma_exp`` [29, 1]) from 3DDFA
    (http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm), with
    the same ``BFM_exp_idx.mat``.
* optional ``keypoints``: 68 1-based landmark vertex ids in the final vertex
  numbering (Deep3DFace ``facemodel_info.mat`` key ``keypoints``, or a text
  file), and optional UVs (``BFM_UV.mat`` key ``UV`` [N, 2]).

Conventions (Deep3DFace's): shape and expression × 1e-5 → decimetres, bases
multiplied by their standard deviations so coefficients are ~ N(0, 1), the
expression mean added to the mean shape, texture / 255 (BFM's texture values
are photo pixel values: sRGB-encoded, the space the library works in).
``front_mask`` is all ones, PCA expressions have no ``exp_bounds``. Without UVs we use a
cylindrical projection of the mean shape (our choice, documented).
"""

from __future__ import annotations

import numpy as np
import scipy.io

from recon_tf.assets import require_file
from recon_tf.face_model import FaceModelFormatError, validate_arrays

BFM_SOURCE = "https://faces.dmi.unibas.ch/bfm/ (BFM 2009, registration required)"
EXP_SOURCE = ("Deep3DFaceReconstruction's BFM folder (Exp_Pca.bin, std_exp.txt, "
              "BFM_exp_idx.mat), https://github.com/microsoft/Deep3DFaceReconstruction")
DDFA_SOURCE = "3DDFA, http://www.cbsr.ia.ac.cn/users/xiangyuzhu/projects/3DDFA/main.htm"
UM_TO_DM = 1e-5


def _load_mat_v73(path: str) -> dict:
    """Read a MATLAB v7.3 (HDF5) file's top-level numeric arrays, in MATLAB's axis order."""
    import h5py

    with h5py.File(path, "r") as f:
        return {k: np.asarray(v).T for k, v in f.items() if isinstance(v, h5py.Dataset)}


def load_mat(path: str, what: str, source: str, keys: list[str]) -> dict:
    """Load a MATLAB file (v5/v7, or v7.3 through h5py) and check it has ``keys``."""
    require_file(path, what, source)
    try:
        with open(path, "rb") as f:
            is_hdf5 = f.read(512)[:128].find(b"MATLAB 7.3") >= 0
        data = _load_mat_v73(path) if is_hdf5 else scipy.io.loadmat(path)
    except (ValueError, OSError, TypeError) as err:
        raise FaceModelFormatError(f"cannot read {what} {path}: {err}") from err
    missing = [k for k in keys if k not in data]
    if missing:
        raise FaceModelFormatError(f"{what} {path} lacks keys {missing}")
    return data


def _as_basis(pc: np.ndarray, n: int) -> np.ndarray:
    """[3N, K] column basis → [K, N, 3]."""
    pc = np.asarray(pc, np.float64)
    if pc.shape[0] != 3 * n:
        raise FaceModelFormatError(f"basis has {pc.shape[0]} rows, expected {3 * n}")
    return pc.T.reshape(-1, n, 3)


def read_exp_pca_bin(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read FaceWarehouse ``Exp_Pca.bin``.

    Returns:
      (mean [M, 3], components [n, M, 3]) in the file's units (micrometres).
    """
    require_file(path, "FaceWarehouse expression PCA (Exp_Pca.bin)", EXP_SOURCE)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size < 4:
        raise FaceModelFormatError(f"{path} is too short to be Exp_Pca.bin")
    n = int(raw[:4].view("<i4")[0])
    floats = raw[4:]
    if n <= 0 or floats.size % 4 or (floats.size // 4) % (n + 1):
        raise FaceModelFormatError(f"{path}: {floats.size} bytes do not hold a mean and "
                                   f"{n} components")
    values = floats.view("<f4").astype(np.float64)
    m3 = values.size // (n + 1)
    if m3 % 3:
        raise FaceModelFormatError(f"{path}: vector length {m3} is not a multiple of 3")
    return values[:m3].reshape(-1, 3), values[m3:].reshape(n, -1, 3)


def read_ddfa_expression(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Read 3DDFA's ``Model_Expression.mat``.

    Returns:
      (mean [M, 3], components [29, M, 3] scaled by ``sigma_exp`` if present),
      in the file's units (micrometres, as BFM).
    """
    data = load_mat(path, "3DDFA expression model (Model_Expression.mat)", DDFA_SOURCE,
                    ["mu_exp", "w_exp"])
    mean = np.asarray(data["mu_exp"], np.float64).reshape(-1, 3)
    w = np.asarray(data["w_exp"], np.float64)
    if "sigma_exp" in data:
        w = w * np.asarray(data["sigma_exp"], np.float64).reshape(1, -1)
    return mean, _as_basis(w, len(mean))


def cylindrical_uv(vertices: np.ndarray) -> np.ndarray:
    """UVs [N, 2] in [0, 1]² from a cylindrical projection around the y axis."""
    v = np.asarray(vertices, np.float64)
    theta = np.arctan2(v[:, 0], v[:, 2])
    u = (theta - theta.min()) / max(np.ptp(theta), 1e-9)
    h = (v[:, 1] - v[:, 1].min()) / max(np.ptp(v[:, 1]), 1e-9)
    return np.stack([u, h], 1).astype(np.float32)


def _read_ids(path: str, what: str, key: str) -> np.ndarray:
    """1-based vertex ids from a .mat (``key``), .npy or text file → 0-based int."""
    require_file(path, what, EXP_SOURCE)
    if path.endswith(".mat"):
        ids = load_mat(path, what, EXP_SOURCE, [key])[key]
    elif path.endswith(".npy"):
        ids = np.load(path)
    else:
        ids = np.loadtxt(path)
    return np.asarray(ids).reshape(-1).astype(np.int64) - 1


def assemble(mean_shape: np.ndarray, id_basis: np.ndarray, exp_basis: np.ndarray,
             mean_tex: np.ndarray, tex_basis: np.ndarray, triangles: np.ndarray,
             lmk68: np.ndarray, uv: np.ndarray | None, skin_mask: np.ndarray | None,
             name: str, albedo_provenance: str, front_mask: np.ndarray | None = None) -> dict:
    """Centre, cast and validate arrays already in decimetres / [0, 1].

    ``front_mask`` defaults to ones (BFM's face is a front face already);
    PCA expressions get no ``exp_bounds``.
    """
    mean_shape = np.asarray(mean_shape, np.float64)
    centre = mean_shape.mean(axis=0, keepdims=True)
    n = len(mean_shape)
    if lmk68 is None or len(lmk68) != 68:
        raise FaceModelFormatError(
            "68 landmark vertex ids are required (Deep3DFace facemodel_info.mat 'keypoints', "
            "or a text file of 68 1-based ids)")
    uv = cylindrical_uv(mean_shape) if uv is None else np.asarray(uv, np.float32)
    arrays = {
        "mean_shape": (mean_shape - centre).astype(np.float32),
        "id_basis": np.asarray(id_basis, np.float32),
        "exp_basis": np.asarray(exp_basis, np.float32),
        "mean_albedo": np.asarray(mean_tex, np.float32),
        "albedo_basis": np.asarray(tex_basis, np.float32),
        "triangles": np.asarray(triangles, np.int32),
        "uv": uv, "tri_uv": np.asarray(triangles, np.int32),
        "lmk68": np.asarray(lmk68, np.int32),
        "skin_mask": np.ones(n, np.float32) if skin_mask is None
        else np.asarray(skin_mask, np.float32).reshape(n),
        "front_mask": np.ones(n, np.float32) if front_mask is None
        else np.asarray(front_mask, np.float32).reshape(n),
        "albedo_provenance": albedo_provenance,
        "name": name,
    }
    validate_arrays(arrays)
    return arrays


def restrict(arrays_3d: list[np.ndarray], triangles: np.ndarray, keep: np.ndarray
             ) -> tuple[list[np.ndarray], np.ndarray]:
    """Keep vertices ``keep`` (0-based ids) of per-vertex arrays (vertex axis = −2)
    and the triangles lying entirely inside them, renumbered."""
    remap = -np.ones(int(max(triangles.max() + 1, keep.max() + 1)), np.int64)
    remap[keep] = np.arange(len(keep))
    tri = remap[triangles]
    tri = tri[np.all(tri >= 0, axis=1)]
    return [a[..., keep, :] for a in arrays_3d], tri


def convert_bfm2009(model_mat: str, exp_pca_bin: str | None = None,
                    exp_std_txt: str | None = None, ddfa_expression_mat: str | None = None,
                    exp_idx_mat: str | None = None, keypoints: str | None = None,
                    uv_mat: str | None = None, n_id: int = 80, n_tex: int = 80) -> dict:
    """Convert BFM 2009 + an expression basis into a recon_tf face-model dict.

    Args:
      model_mat: ``01_MorphableModel.mat``.
      exp_pca_bin: FaceWarehouse ``Exp_Pca.bin`` (with ``exp_std_txt``), or
      ddfa_expression_mat: 3DDFA ``Model_Expression.mat``; exactly one.
      exp_idx_mat: ``BFM_exp_idx.mat`` with ``trimIndex`` (1-based ids of the
        expression vertices in BFM); not needed if the expression basis has
        all BFM vertices.
      keypoints: 68 1-based landmark ids (in the trimmed numbering):
        ``.mat`` with key ``keypoints``, ``.npy`` or text.
      uv_mat: optional ``.mat`` with key ``UV`` [N, 2].
      n_id, n_tex: identity and albedo PCs kept (Deep3DFace: 80).
    """
    data = load_mat(model_mat, "BFM 2009 model (01_MorphableModel.mat)", BFM_SOURCE,
                    ["shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl"])
    if (exp_pca_bin is None) == (ddfa_expression_mat is None):
        raise ValueError("give exactly one expression basis: exp_pca_bin or ddfa_expression_mat")
    mean = np.asarray(data["shapeMU"], np.float64).reshape(-1, 3)
    n = len(mean)
    id_basis = _as_basis(np.asarray(data["shapePC"])[:, :n_id]
                         * np.asarray(data["shapeEV"]).reshape(1, -1)[:, :n_id], n)
    tex_mean = np.asarray(data["texMU"], np.float64).reshape(-1, 3) / 255.0
    tex_basis = _as_basis(np.asarray(data["texPC"])[:, :n_tex]
                          * np.asarray(data["texEV"]).reshape(1, -1)[:, :n_tex], n) / 255.0
    triangles = np.asarray(data["tl"], np.int64) - 1
    if exp_pca_bin is not None:
        exp_mean, exp_basis = read_exp_pca_bin(exp_pca_bin)
        if exp_std_txt is not None:
            std = np.loadtxt(require_file(exp_std_txt, "expression std (std_exp.txt)",
                                          EXP_SOURCE)).reshape(-1)
            if len(std) != len(exp_basis):
                raise FaceModelFormatError(f"{exp_std_txt} has {len(std)} values, "
                                           f"Exp_Pca.bin {len(exp_basis)} components")
            exp_basis = exp_basis * std[:, None, None]
    else:
        exp_mean, exp_basis = read_ddfa_expression(ddfa_expression_mat)
    arrays = [mean[None], id_basis, tex_mean[None], tex_basis]
    if len(exp_mean) != n:
        if exp_idx_mat is None:
            raise FaceModelFormatError(
                f"expression basis has {len(exp_mean)} vertices, BFM {n}: pass exp_idx_mat "
                f"(BFM_exp_idx.mat with trimIndex) from {EXP_SOURCE}")
        keep = _read_ids(exp_idx_mat, "expression vertex index (BFM_exp_idx.mat)", "trimIndex")
        if len(keep) != len(exp_mean) or keep.max() >= n:
            raise FaceModelFormatError(f"{exp_idx_mat}: trimIndex does not match the bases")
        arrays, triangles = restrict(arrays, triangles, keep)
    mean, id_basis, tex_mean, tex_basis = arrays
    mean = (mean[0] + exp_mean) * UM_TO_DM
    lmk = _read_ids(keypoints, "68 landmark ids", "keypoints") if keypoints else None
    uv = None
    if uv_mat:
        uv = load_mat(uv_mat, "BFM UV map (BFM_UV.mat)", DDFA_SOURCE, ["UV"])["UV"]
    provenance = (f"BFM 2009 texture PCA (01_MorphableModel.mat texMU, texPC x texEV, / 255), "
                  f"first {tex_basis.shape[0]} modes; sRGB-encoded display values")
    return assemble(mean, id_basis * UM_TO_DM, exp_basis * UM_TO_DM, tex_mean[0], tex_basis,
                    triangles, lmk, uv, None, "bfm2009", provenance)
