"""Shared fixtures: the default face model (loaded once), quiet TensorFlow logs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def ict_arrays():
    """The default ICT face model as a recon_tf face-model dict (converted once, cached)."""
    from bfm import default_face_model_path
    from recon_tf.face_model import load_face_model_arrays

    return load_face_model_arrays(default_face_model_path())


@pytest.fixture(scope="session")
def face_model(ict_arrays):
    """The default face model (ICT-FaceKit face region) as a FaceModel."""
    from recon_tf.face_model import FaceModel

    return FaceModel(ict_arrays)


@pytest.fixture(scope="session")
def tiny_arrays():
    """A tiny valid face model: a 4x4 vertex grid (18 triangles), 68 landmarks."""
    import numpy as np

    g = np.stack(np.meshgrid(np.linspace(-1, 1, 4), np.linspace(-1, 1, 4)), -1).reshape(-1, 2)
    n = len(g)
    mean = np.concatenate([g, np.zeros((n, 1))], 1).astype(np.float32)
    tris = []
    for r in range(3):
        for c in range(3):
            a = r * 4 + c
            tris += [[a, a + 1, a + 5], [a, a + 5, a + 4]]
    rng = np.random.default_rng(0)
    return {
        "mean_shape": mean,
        "id_basis": rng.normal(size=(5, n, 3)).astype(np.float32) * 0.1,
        "exp_basis": rng.normal(size=(4, n, 3)).astype(np.float32) * 0.1,
        "mean_albedo": np.full((n, 3), 0.5, np.float32),
        "albedo_basis": rng.normal(size=(6, n, 3)).astype(np.float32) * 0.05,
        "triangles": np.array(tris, np.int32),
        "uv": (g * 0.5 + 0.5).astype(np.float32),
        "tri_uv": np.array(tris, np.int32),
        "lmk68": (np.arange(68) % n).astype(np.int32),
        "skin_mask": np.ones(n, np.float32),
        "name": "tiny",
    }
