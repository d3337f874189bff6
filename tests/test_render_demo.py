"""The render demo (tools/render_demo.py): outputs exist, round-trip, and bad flags fail clearly."""

import os
import subprocess
import sys

import cv2
import numpy as np

from recon_tf.export import read_obj, read_ply

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "render_demo.py")


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, TOOL, *args], env=env, capture_output=True,
                          text=True)


def test_reconstruct_writes_consistent_outputs(tmp_path, face_model):
    out = tmp_path / "demo"
    result = _run(f"--output_dir={out}", "--image_size=96", "--uv_size=64", "--yaw=0.5",
                  "--expression=jawOpen=0.5,eyeBlink_L=1")
    assert result.returncode == 0, result.stderr[-2000:]
    coeffs = np.load(out / "coeffs.npy")
    assert coeffs.shape == (1, 222)
    c = face_model.layout.split(coeffs)
    names = list(face_model.arrays["exp_names"])
    assert c.expression.numpy()[0, names.index("jawOpen")] == 0.5
    assert c.angles.numpy()[0, 1] == 0.5
    verts, _ = face_model.compute(coeffs)
    mesh = read_obj(str(out / "face.obj"))
    np.testing.assert_allclose(mesh.vertices, verts[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, face_model.arrays["triangles"])
    assert mesh.material_library == "face.mtl"
    albedo = cv2.imread(str(out / "face_albedo.png"))
    assert albedo.shape == (64, 64, 3) and albedo.max() > 100
    ply = read_ply(str(out / "face.ply"))
    assert ply.colors is not None and len(ply.vertices) == face_model.num_vertices
    render = cv2.imread(str(out / "render.png"))
    assert render.shape == (96, 96, 3)
    assert np.abs(render.astype(int) - 128).max() > 40  # a face, not just the grey backdrop


def test_reconstruct_bad_flags_fail_clearly(tmp_path):
    bad = _run(f"--output_dir={tmp_path}", "--expression=notABlendshape=1")
    assert bad.returncode != 0 and "unknown expression 'notABlendshape'" in bad.stderr
    missing = _run(f"--output_dir={tmp_path}", f"--face_model={tmp_path}/absent.npz")
    assert missing.returncode != 0 and "Missing face-model file" in missing.stderr
