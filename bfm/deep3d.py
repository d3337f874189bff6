"""Deep3DFace's converted BFM (``BFM_model_front.mat``) → recon_tf face model.

``BFM_model_front.mat`` is what Deep3DFaceReconstruction's ``transferBFM09``
writes from BFM 2009 + FaceWarehouse expressions (licence-restricted; make it
with https://github.com/microsoft/Deep3DFaceReconstruction from your own BFM
copy). Keys: ``meanshape`` [1, 3N] (decimetres), ``idBase`` [3N, 80],
``exBase`` [3N, 64], ``meantex`` [1, 3N] (0-255), ``texBase`` [3N, 80],
``tri`` [T, 3] (1-based), ``keypoints`` [1, 68] (1-based), optional
``skinmask`` [1, N], ``point_buf``, ``frontmask2_idx`` (1-based ids of the
front face: our ``front_mask``, else all ones). N = 35709.
"""

from __future__ import annotations

import numpy as np

from bfm.bfm2009 import _as_basis, assemble, load_mat

DEEP3D_SOURCE = ("Deep3DFaceReconstruction's BFM/BFM_model_front.mat, built from BFM 2009 "
                 "by its transferBFM09 (https://github.com/microsoft/Deep3DFaceReconstruction)")


def convert_deep3d(path: str, uv: np.ndarray | None = None) -> dict:
    """Convert ``BFM_model_front.mat`` into a recon_tf face-model dict.

    Args:
      path: the ``.mat`` file.
      uv: optional per-vertex UVs [N, 2]; default a cylindrical projection.
    """
    d = load_mat(path, "Deep3DFace BFM model (BFM_model_front.mat)", DEEP3D_SOURCE,
                 ["meanshape", "idBase", "exBase", "meantex", "texBase", "tri", "keypoints"])
    mean = np.asarray(d["meanshape"], np.float64).reshape(-1, 3)
    n = len(mean)
    skin = d.get("skinmask")
    front = None
    if "frontmask2_idx" in d:
        front = np.zeros(n, np.float32)
        front[np.asarray(d["frontmask2_idx"]).reshape(-1).astype(np.int64) - 1] = 1.0
    tex_basis = _as_basis(d["texBase"], n) / 255.0
    provenance = (f"Deep3DFace BFM_model_front.mat texture PCA (meantex, texBase / 255; BFM "
                  f"2009), {tex_basis.shape[0]} modes; sRGB-encoded display values")
    return assemble(mean, _as_basis(d["idBase"], n), _as_basis(d["exBase"], n),
                    np.asarray(d["meantex"], np.float64).reshape(-1, 3) / 255.0, tex_basis,
                    np.asarray(d["tri"], np.int64) - 1,
                    np.asarray(d["keypoints"]).reshape(-1).astype(np.int64) - 1,
                    uv, None if skin is None else np.asarray(skin).reshape(-1), "bfm_deep3d",
                    provenance, front)
