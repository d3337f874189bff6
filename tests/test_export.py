"""OBJ (+MTL+PNG) and PLY export round trips, and malformed input."""

import cv2
import numpy as np
import pytest

from recon_tf.export import MeshFormatError, read_obj, read_ply, write_obj, write_ply


def test_obj_roundtrip_with_uv_normals_texture(tmp_path, ict_arrays):
    v = ict_arrays["mean_shape"]
    f = ict_arrays["triangles"]
    normals = v / np.linalg.norm(v, axis=1, keepdims=True)
    tex = np.zeros((64, 32, 3), np.float32)
    tex[:32, :, 0] = 1.0
    path = tmp_path / "out" / "face.obj"
    write_obj(str(path), v, f, uv=ict_arrays["uv"], face_uv=ict_arrays["tri_uv"],
              normals=normals, texture=tex)
    mesh = read_obj(str(path))
    np.testing.assert_allclose(mesh.vertices, v, atol=1e-5)
    np.testing.assert_array_equal(mesh.faces, f)
    np.testing.assert_allclose(mesh.uv, ict_arrays["uv"], atol=1e-5)
    np.testing.assert_array_equal(mesh.face_uv, ict_arrays["tri_uv"])
    np.testing.assert_allclose(mesh.normals, normals, atol=1e-5)
    assert mesh.material_library == "face.mtl"
    mtl = (tmp_path / "out" / "face.mtl").read_text()
    assert "map_Kd face_albedo.png" in mtl
    png = cv2.imread(str(tmp_path / "out" / "face_albedo.png"))[..., ::-1]
    assert png.shape == (64, 32, 3) and png[0, 0, 0] == 255 and png[-1, 0, 0] == 0


def test_obj_without_uv(tmp_path):
    v = np.random.default_rng(0).normal(size=(5, 3))
    f = np.array([[0, 1, 2], [2, 3, 4]])
    write_obj(str(tmp_path / "a.obj"), v, f)
    m = read_obj(str(tmp_path / "a.obj"))
    np.testing.assert_allclose(m.vertices, v, atol=1e-5)
    assert m.uv is None and m.face_uv is None


@pytest.mark.parametrize("colors", [None, "uint8", "float"])
def test_ply_roundtrip(tmp_path, colors):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(40, 3)).astype(np.float32)
    f = rng.integers(0, 40, size=(30, 3))
    c = None
    if colors == "uint8":
        c = rng.integers(0, 256, size=(40, 3)).astype(np.uint8)
    elif colors == "float":
        c = rng.uniform(size=(40, 3))
    write_ply(str(tmp_path / "m.ply"), v, f, colors=c)
    m = read_ply(str(tmp_path / "m.ply"))
    np.testing.assert_array_equal(m.vertices.astype(np.float32), v)
    np.testing.assert_array_equal(m.faces, f)
    if c is None:
        assert m.colors is None
    else:
        want = c if c.dtype == np.uint8 else np.clip(c * 255 + 0.5, 0, 255).astype(np.uint8)
        np.testing.assert_array_equal(m.colors, want)


def test_ascii_ply_is_read(tmp_path):
    (tmp_path / "a.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
        "property float z\nelement face 1\nproperty list uchar int vertex_indices\nend_header\n"
        "0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    m = read_ply(str(tmp_path / "a.ply"))
    np.testing.assert_array_equal(m.faces, [[0, 1, 2]])


def test_bad_meshes(tmp_path):
    with pytest.raises(ValueError, match=r"vertices must be \[N, 3\]"):
        write_obj(str(tmp_path / "x.obj"), np.zeros((3, 2)), np.zeros((1, 3), int))
    with pytest.raises(ValueError, match="out of range"):
        write_ply(str(tmp_path / "x.ply"), np.zeros((3, 3)), np.array([[0, 1, 3]]))
    with pytest.raises(ValueError, match="NaN"):
        write_obj(str(tmp_path / "x.obj"), np.full((3, 3), np.nan), np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="together"):
        write_obj(str(tmp_path / "x.obj"), np.zeros((3, 3)), np.array([[0, 1, 2]]),
                  uv=np.zeros((3, 2)))
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 x\n")
    with pytest.raises(MeshFormatError, match="bad.obj:4"):
        read_obj(str(tmp_path / "bad.obj"))
    (tmp_path / "oob.obj").write_text("v 0 0 0\nf 1 2 3\n")
    with pytest.raises(MeshFormatError, match="out of range"):
        read_obj(str(tmp_path / "oob.obj"))
    (tmp_path / "bad.ply").write_bytes(b"\x00\x01garbage")
    with pytest.raises(MeshFormatError, match="not a PLY"):
        read_ply(str(tmp_path / "bad.ply"))
