"""The main job, tools/reconstruct.py: photos in, fitted faces out; bad files skipped."""

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from recon_tf.assets import asset_path
from recon_tf.export import read_obj
from recon_tf.preprocess.landmarks import nme_outer_eyes, read_pts
from recon_tf.reconstruction import FINE_OUTPUT_FILES, OUTPUT_FILES, reproject

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "reconstruct.py")
FAST = ["--pose_steps=20", "--landmark_steps=60", "--photo_scales=112",
        "--photo_steps=20", "--uv_size=128", "--fine_steps=10", "--fine_uv_size=64",
        "--subdivisions=1"]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, TOOL, *args], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    try:
        photo = asset_path("images/faces_68pts/takeo.ppm")
        no_face = asset_path("images/faces/dogs.jpg")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    src = tmp_path_factory.mktemp("inputs")
    shutil.copy(photo, src / "takeo.ppm")
    shutil.copy(no_face, src / "dogs.jpg")
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    (src / "notes.png").write_text("not an image")
    gray = cv2.cvtColor(cv2.imread(photo), cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(src / "takeo_gray.png"), cv2.resize(gray, None, fx=2, fy=2))
    out = tmp_path_factory.mktemp("out")
    result = _run(f"--input={src}", f"--output={out}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return src, out, result


def test_every_input_is_reported_and_good_ones_have_all_outputs(run_dir):
    _, out, _ = run_dir
    summary = json.load(open(out / "summary.json"))
    status = {os.path.basename(e["path"]): e for e in summary["images"]}
    assert status["takeo.ppm"]["status"] == "ok"
    assert status["takeo_gray.png"]["status"] == "ok"
    assert status["dogs.jpg"]["status"] == "skipped"
    assert status["dogs.jpg"]["reason"] == "no_face"
    assert status["corrupt.jpg"]["status"] == "skipped"
    assert status["notes.png"]["reason"] == "not_an_image"
    assert summary["totals"]["ok"] == 2 and summary["totals"]["skipped"] == 3
    for stem in ("takeo", "takeo_gray"):
        for name in OUTPUT_FILES + FINE_OUTPUT_FILES:
            assert (out / stem / name).exists(), (stem, name)
    assert not (out / "dogs").exists()


def test_outputs_are_in_millimetres_on_the_photo(run_dir):
    src, out, _ = run_dir
    d = out / "takeo"
    mesh = read_obj(str(d / "mesh_coarse.obj"))
    extent = np.ptp(mesh.vertices, axis=0)
    assert 100 < extent[0] < 250 and 100 < extent[1] < 350  # a head-sized face, in mm
    neutral = read_obj(str(d / "mesh_neutral.obj"))
    assert neutral.vertices.shape == mesh.vertices.shape
    assert mesh.material_library == "mesh_coarse.mtl"
    assert "albedo_coarse.png" in open(d / "mesh_coarse.mtl").read()
    photo = cv2.imread(str(src / "takeo.ppm"))
    render = cv2.imread(str(d / "render_coarse.png"))
    mask = cv2.imread(str(d / "face_mask.png"), 0)
    assert render.shape == photo.shape and mask.shape == photo.shape[:2]
    assert 0.1 < (mask > 0).mean() < 0.6
    # Outside the face mask the render is the photo itself.
    outside = mask == 0
    assert np.abs(render.astype(int) - photo.astype(int))[outside].max() <= 2
    lmk = np.loadtxt(d / "landmarks68.txt")
    gt = read_pts(asset_path("images/faces_68pts/takeo.pts"))
    assert lmk.shape == (68, 2)
    assert nme_outer_eyes(lmk, gt) < 0.08
    now = np.loadtxt(d / "now_landmarks.txt")
    assert now.shape == (7, 3)
    assert now[0, 0] < now[3, 0]  # right-eye outer corner is on the subject's right (x < 0)


def test_coeffs_reproject_the_mesh_onto_the_landmarks(run_dir):
    _, out, _ = run_dir
    d = out / "takeo"
    mesh = read_obj(str(d / "mesh_coarse.obj"))
    with np.load(d / "coeffs.npz") as c:
        assert str(c["face_model"])
        assert c["crop_transform"].shape == (2, 3)
        ids = c["landmark_ids"]
    projected = reproject(str(d / "coeffs.npz"), mesh.vertices[ids])
    np.testing.assert_allclose(projected, np.loadtxt(d / "landmarks68.txt"), atol=0.05)


def test_rerun_skips_finished_images(run_dir):
    src, out, _ = run_dir
    before = os.path.getmtime(out / "takeo" / "coeffs.npz")
    result = _run(f"--input={src / 'takeo.ppm'}", f"--output={out}", *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.getmtime(out / "takeo" / "coeffs.npz") == before
    assert "1 already done" in result.stderr


def test_list_file_input_and_missing_input(tmp_path, run_dir):
    src, _, _ = run_dir
    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n{src / 'corrupt.jpg'}\n")
    result = _run(f"--input={listing}", f"--output={tmp_path / 'o'}", *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.load(open(tmp_path / "o" / "summary.json"))
    assert [e["status"] for e in summary["images"]] == ["skipped"]
    missing = _run(f"--input={tmp_path / 'absent.jpg'}", f"--output={tmp_path / 'o2'}")
    assert missing.returncode != 0 and "does not exist" in missing.stderr


def test_fine_outputs_are_consistent(run_dir):
    from recon_tf.mesh import decode_displacement_png, decode_normal_map_png

    src, out, _ = run_dir
    d = out / "takeo"
    meta = json.load(open(d / "maps.json"))
    disp = np.load(d / "displacement.npy")
    assert disp.dtype == np.float32 and disp.shape == (64, 64)
    decoded = decode_displacement_png(str(d / "displacement.png"), meta["displacement"])
    np.testing.assert_allclose(decoded, disp, atol=meta["displacement"]["scale"] / 65535 * 1.01)
    normals = decode_normal_map_png(str(d / "normals.png"))
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=1e-2)
    fine = read_obj(str(d / "mesh_fine.obj"))
    coarse = read_obj(str(d / "mesh_coarse.obj"))
    fine_v, fine_f, coarse_v, coarse_f = fine.vertices, fine.faces, coarse.vertices, coarse.faces
    assert len(fine_f) == 4 * len(coarse_f)  # one subdivision
    np.testing.assert_allclose(fine_v[:len(coarse_v)], coarse_v, atol=1.0)  # mm, ≤ 1 mm detail
    photo = cv2.imread(str(src / "takeo.ppm"))
    render = cv2.imread(str(d / "render_fine.png"))
    assert render.shape == photo.shape
    mask = cv2.imread(str(d / "face_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    assert np.abs(render.astype(int) - photo.astype(int))[~mask].max() <= 1  # only the face
    summary = json.load(open(out / "summary.json"))
    entry = [e for e in summary["images"] if e["path"].endswith("takeo.ppm")][0]
    assert set(entry["fine_loss"]) >= {"pho", "alb", "smo", "total"}
