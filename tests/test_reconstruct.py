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
from recon_tf.data.photo_variants import photo_variant
from recon_tf.export import read_obj
from recon_tf.face_model import load_face_model
from recon_tf.mesh import boundary_loops
from recon_tf.photo_fine import FINE_OUTPUT_FILES
from recon_tf.preprocess.landmarks import nme_outer_eyes, read_pts
from recon_tf.reconstruction import OUTPUT_FILES, reproject

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "reconstruct.py")
FAST = ["--pose_steps=20", "--landmark_steps=60", "--photo_scales=112",
        "--photo_steps=20", "--uv_size=128", "--fine_steps=10", "--fine_uv_size=64",
        "--subdivisions=1"]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, TOOL, *args], env=env, capture_output=True,
                          text=True, timeout=900)


def _bad_and_odd_inputs(src, photo):
    """Every kind of input the job must report: bad files (skipped) and odd
    encodings of a real face (reconstructed)."""
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    (src / "notes.png").write_text("not an image")
    (src / "empty.jpg").write_bytes(b"")
    (src / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")  # ignored, but listed
    (src / "annotations").mkdir()
    (src / "annotations" / "takeo.pts").write_text("version: 1\n")
    jpeg = cv2.imencode(".jpg", cv2.imread(photo))[1].tobytes()
    (src / "truncated.jpg").write_bytes(jpeg[:len(jpeg) // 3])
    cv2.imwrite(str(src / "one_pixel.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(src / "huge_blank.png"), np.full((9000, 9000), 255, np.uint8))
    bgr = cv2.imread(photo)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    cv2.imwrite(str(src / "takeo_gray.png"), cv2.resize(gray, None, fx=2, fy=2))
    rgba = np.concatenate([bgr, np.full(bgr.shape[:2] + (1,), 255, np.uint8)], -1)
    cv2.imwrite(str(src / "takeo_rgba.png"), rgba)
    cv2.imwrite(str(src / "takeo_16bit.png"), bgr.astype(np.uint16) * 257)
    wide = np.full((2000, 8200, 3), 128, np.uint8)  # over max_side: decoded at 8192 x 1998
    face = cv2.resize(bgr, (1600 * bgr.shape[1] // bgr.shape[0], 1600))
    wide[200:1800, 3000:3000 + face.shape[1]] = face
    cv2.imwrite(str(src / "takeo_wide.jpg"), wide)
    einstein, truth = (asset_path(f"images/faces_68pts/einstein.{e}") for e in ("jpg", "pts"))
    tight, _ = photo_variant("tight", cv2.imread(einstein), read_pts(truth))
    cv2.imwrite(str(src / "einstein_tight.png"), tight)  # found by the frame check alone
    dogs = cv2.imread(str(src / "dogs.jpg"))
    dogs[370:640, :240] = dogs.reshape(-1, 3).mean(0)  # paint over the magazine cover
    cv2.imwrite(str(src / "dogs_only.jpg"), dogs)


SKIPPED = {"dogs_only.jpg": "no_face", "corrupt.jpg": "corrupt", "notes.png": "not_an_image",
           "empty.jpg": "empty", "one_pixel.png": "too_small", "huge_blank.png": "no_face"}
RECONSTRUCTED = {"takeo.ppm": 1, "takeo_gray.png": 1, "takeo_rgba.png": 1,
                 "takeo_16bit.png": 1, "takeo_wide.jpg": 1, "two_people.jpg": 2,
                 "dogs.jpg": 1,  # a magazine cover's face, on its side, behind the dogs
                 "einstein_tight.png": 1}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    try:
        photo = asset_path("images/faces_68pts/takeo.ppm")
        no_face = asset_path("images/faces/dogs.jpg")
        group = asset_path("images/faces/two_people.jpg")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    src = tmp_path_factory.mktemp("inputs")
    shutil.copy(photo, src / "takeo.ppm")
    shutil.copy(no_face, src / "dogs.jpg")
    shutil.copy(group, src / "two_people.jpg")
    _bad_and_odd_inputs(src, photo)
    out = tmp_path_factory.mktemp("out")
    result = _run(f"--input={src}", f"--output={out}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    return src, out, result


def test_every_input_is_reported_and_good_ones_have_all_outputs(run_dir):
    from recon_tf.gallery import PREVIEW_FILES

    src, out, result = run_dir
    summary = json.load(open(out / "summary.json"))
    status = {os.path.basename(e["path"]): e for e in summary["images"]}
    assert set(status) == set(SKIPPED) | set(RECONSTRUCTED) | {"truncated.jpg"}
    for name, reason in SKIPPED.items():
        assert (status[name]["status"], status[name]["reason"]) == ("skipped", reason), name
        assert not (out / name.split(".")[0]).exists()  # no half-written output folder
    # A truncated JPEG either decodes its first rows (and has no face there) or is corrupt.
    assert status["truncated.jpg"]["status"] == "skipped"
    assert status["truncated.jpg"]["reason"] in ("corrupt", "no_face")
    files = OUTPUT_FILES + FINE_OUTPUT_FILES + PREVIEW_FILES + ("thumb_fine.jpg",)
    for name, faces in RECONSTRUCTED.items():
        entry = status[name]
        assert entry["status"] == "ok", entry
        assert entry["faces_reconstructed"] == faces == len(entry["faces"])
        for face in entry["faces"]:
            for f in files:
                assert (out / face["output"] / f).exists(), (name, face["output"], f)
            assert set(face["seconds"]) == {"fit", "fine", "write"}
        assert set(entry["seconds"]) == {"prepare", "fit", "fine", "write", "total"}
    totals = summary["totals"]
    assert (totals["ok"], totals["skipped"], totals["pending"]) == (len(RECONSTRUCTED),
                                                                   len(SKIPPED) + 1, 0)
    assert totals["faces"] == sum(RECONSTRUCTED.values())
    assert totals["seconds"]["fit"] > 0
    # The folder's files without an image extension are not inputs, but are listed.
    assert [os.path.relpath(e["path"], src) for e in summary["ignored"]] == [
        os.path.join("annotations", "takeo.pts"), "clip.mp4"]
    assert totals["ignored"] == 2 and "2 other files ignored" in result.stdout
    assert "ETA" in result.stderr  # progress with rate and ETA


def test_every_face_of_a_group_photo(run_dir):
    src, out, _ = run_dir
    entry = [e for e in json.load(open(out / "summary.json"))["images"]
             if e["path"].endswith("two_people.jpg")][0]
    assert entry["num_faces"] == 2
    assert [f["output"] for f in entry["faces"]] == ["two_people",
                                                      os.path.join("two_people", "faces", "1")]
    big, small = (f["box"] for f in entry["faces"])
    assert big[2] * big[3] >= small[2] * small[3]  # largest first
    masks = [cv2.imread(str(out / f["output"] / "face_mask.png"), 0) > 127
             for f in entry["faces"]]
    assert masks[0].sum() > 0 and masks[1].sum() > 0
    assert (masks[0] & masks[1]).sum() < 0.05 * min(m.sum() for m in masks)  # two faces
    for f, mask in zip(entry["faces"], masks):  # each face's render is where its box is
        x, y, w, h = f["box"]
        rows, cols = np.nonzero(mask)
        assert x <= cols.mean() <= x + w and y <= rows.mean() <= y + h


def test_a_face_on_its_side_is_found_by_the_turned_search(run_dir):
    """dogs.jpg holds one human face: a magazine cover lying on its side, which MTCNN
    finds only in the photo turned by −90°; its render lands inside its box and its
    fitted roll is a quarter turn."""
    _, out, _ = run_dir
    entry = [e for e in json.load(open(out / "summary.json"))["images"]
             if e["path"].endswith(os.sep + "dogs.jpg")][0]
    face = entry["faces"][0]
    assert face["rotation"] == -90.0 and face["verify_score"] > 0.9
    mask = cv2.imread(str(out / face["output"] / "face_mask.png"), 0) > 127
    rows, cols = np.nonzero(mask)
    x, y, w, h = face["box"]
    assert x <= cols.mean() <= x + w and y <= rows.mean() <= y + h
    roll = float(np.load(out / face["output"] / "coeffs.npz")["angles"][2])
    assert abs(abs(roll) - np.pi / 2) < 0.4, roll


def test_a_face_that_fills_the_frame_is_found_by_the_frame_check(run_dir):
    """Einstein cropped to his landmarks is missed by MTCNN; FaceMesh on the whole frame
    finds him, summary.json says so, and his render covers most of the crop."""
    _, out, _ = run_dir
    entry = [e for e in json.load(open(out / "summary.json"))["images"]
             if e["path"].endswith("einstein_tight.png")][0]
    face = entry["faces"][0]
    assert face["framed"] is True and face["verify_score"] >= 0.9
    mask = cv2.imread(str(out / face["output"] / "face_mask.png"), 0) > 127
    assert mask.mean() > 0.5


def test_index_html_shows_every_face_and_every_skip(run_dir):
    _, out, _ = run_dir
    page = (out / "index.html").read_text()
    summary = json.load(open(out / "summary.json"))
    for entry in summary["images"]:
        if entry["status"] == "ok":
            for face in entry["faces"]:
                for name in ("thumb_input.jpg", "thumb_coarse.jpg", "thumb_fine.jpg",
                             "normals.png", "geometry_views.png"):
                    assert f"src='{os.path.join(face['output'], name)}'" in page
        else:
            assert os.path.basename(entry["path"]) in page and entry["reason"] in page
    assert all(e["path"] in page for e in summary["ignored"])
    views = cv2.imread(str(out / "takeo" / "geometry_views.png"))
    assert views.shape[1] == 2 * views.shape[0]  # two views side by side
    assert (views < 250).mean() > 0.1  # grey geometry on white


def test_outputs_are_in_millimetres_on_the_photo(run_dir):
    src, out, _ = run_dir
    d = out / "takeo"
    mesh = read_obj(str(d / "mesh_coarse.obj"))
    extent = np.ptp(mesh.vertices, axis=0)
    assert 100 < extent[0] < 250 and 100 < extent[1] < 350  # a head-sized face, in mm
    neutral = read_obj(str(d / "mesh_neutral.obj"))
    # The neutral mesh is closed over the eyes and mouth (NoW scans are): the model's
    # vertices, then one centre per opening (two eyes and the mouth of ICT's face).
    assert neutral.vertices.shape == (len(mesh.vertices) + 3, 3)
    assert [len(loop) for loop in boundary_loops(neutral.faces)] == [
        len(boundary_loops(mesh.faces)[0])]
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
    # Each file's 7 points are vertices of its own mesh (the NoW pair: neutral mesh + points).
    for points, mesh in ((now, "mesh_coarse.obj"), (np.loadtxt(d / "now_landmarks_neutral.txt"),
                                                     "mesh_neutral.obj")):
        verts = read_obj(str(d / mesh)).vertices
        gap = np.linalg.norm(points[:, None] - verts[None], axis=-1).min(axis=1)
        assert gap.max() < 1e-3, mesh


@pytest.mark.parametrize("stem, atol", [("takeo", 0.05), ("takeo_wide", 1.0)])
def test_coeffs_reproject_the_mesh_onto_the_landmarks(run_dir, face_model, stem, atol):
    """coeffs.npz's camera re-projects the mesh onto landmarks68.txt; for a photo
    decoded at a reduced size (x and y scales differ by its whole-pixel sides) to
    within half a reduced pixel. Points 17–67 are the model's calibrated output
    vertices; the detector's points are recorded beside them."""
    _, out, _ = run_dir
    d = out / stem
    mesh = read_obj(str(d / "mesh_coarse.obj"))
    with np.load(d / "coeffs.npz") as c:
        assert str(c["face_model"])
        assert c["crop_transform"].shape == (2, 3)
        ids, after, blend = c["landmark_ids"], c["landmark_ids_next"], c["landmark_blend"]
        detected = c["detected_landmarks68"]
    assert np.any(blend[:17] > 0) and not np.any(blend[17:])  # only the jaw slides
    np.testing.assert_array_equal(ids[17:], face_model.lmk68_output[17:])
    assert nme_outer_eyes(np.loadtxt(d / "landmarks68.txt"), detected) < 0.15
    points = (1 - blend[:, None]) * mesh.vertices[ids] + blend[:, None] * mesh.vertices[after]
    projected = reproject(str(d / "coeffs.npz"), points)
    np.testing.assert_allclose(projected, np.loadtxt(d / "landmarks68.txt"), atol=atol)


def test_calibrate_landmarks_tool_on_the_main_job_output(run_dir, face_model, tmp_path):
    """tools/calibrate_landmarks.py reads every fitted face of a main-job folder and
    writes a symmetric table that brings the fits' points 17–67 closer to the
    detector's on those faces."""
    from recon_tf.data.pipeline import FLIP_PERMUTATION_68
    from recon_tf.landmarks import detector_distance, vertex_mirror
    from recon_tf.reconstruction import read_fitted_faces

    _, out, _ = run_dir
    table = tmp_path / "ids.json"
    env = dict(os.environ, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "calibrate_landmarks.py"),
                             f"--fits={out}", "--cv_repeats=1", f"--output={table}",
                             f"--model_output={tmp_path / 'model.npz'}"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(table.read_text())
    faces = sum(1 for _, _, files in os.walk(out) if "coeffs.npz" in files)
    assert data["faces"] == faces >= 9
    assert set(data["groups"]) <= {"brows", "nose", "eyes", "mouth"}
    ids = np.array(data["lmk68_output"])
    screens, detected, _ = read_fitted_faces(str(out))
    model = face_model
    lmk = np.asarray(model.arrays["lmk68"])
    np.testing.assert_array_equal(ids[:17], lmk[:17])
    mirror = vertex_mirror(np.asarray(model.arrays["mean_shape"]))
    np.testing.assert_array_equal(mirror[ids[17:]], ids[FLIP_PERMUTATION_68[17:]])
    inner = tuple(range(17, 68))
    before = detector_distance(screens, detected, lmk, inner)
    after = detector_distance(screens, detected, ids, inner)
    assert after <= before
    assert after < before or not data["groups"]
    written = load_face_model(str(tmp_path / "model.npz"))
    np.testing.assert_array_equal(written.lmk68_output, ids)
    assert written.geometry_hash == model.geometry_hash


def test_rerun_skips_finished_images(run_dir):
    src, out, _ = run_dir
    before = os.path.getmtime(out / "takeo" / "coeffs.npz")
    result = _run(f"--input={src / 'takeo.ppm'}", f"--output={out}", *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert os.path.getmtime(out / "takeo" / "coeffs.npz") == before
    assert "0 to do" in result.stderr


def test_shards_split_the_list_and_merge_one_summary(run_dir, tmp_path):
    src, _, _ = run_dir
    listing = tmp_path / "list.txt"
    names = ["corrupt.jpg", "notes.png", "empty.jpg", "one_pixel.png", "dogs_only.jpg"]
    listing.write_text("".join(f"{src / n}\n" for n in names))
    out = tmp_path / "o"
    first = _run(f"--input={listing}", f"--output={out}", "--shard=0/2", *FAST)
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    states = [e["status"] for e in summary["images"]]
    assert states == ["skipped", "pending", "skipped", "pending", "skipped"]
    second = _run(f"--input={listing}", f"--output={out}", "--shard=1/2", *FAST)
    assert second.returncode == 0, second.stderr[-2000:]
    summary = json.load(open(out / "summary.json"))
    assert [os.path.basename(e["path"]) for e in summary["images"]] == names
    assert summary["totals"]["pending"] == 0 and summary["totals"]["skipped"] == 5
    bad = _run(f"--input={listing}", f"--output={out}", "--shard=2/2")
    assert bad.returncode != 0 and "0 <= i < n" in bad.stderr


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
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"\x00")
    none = _run(f"--input={tmp_path / 'videos'}", f"--output={tmp_path / 'o3'}")
    assert none.returncode != 0 and "no images found" in none.stderr
    assert "1 files without an image extension, e.g. clip.mp4" in none.stderr


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
    assert set(entry["faces"][0]["fine_loss"]) >= {"pho", "alb", "smo", "total"}
    assert "noise_sigma" not in entry["faces"][0]["fine_loss"]
    assert 0 < entry["faces"][0]["fine_noise_sigma"] < 10  # 0–255 units, a clean scan


def test_summary_reports_each_render_psnr_over_the_detected_face(run_dir):
    """summary.json's per-face PSNR is that of render_coarse.png / render_fine.png
    against the photo over face_mask.png ∩ the hull of the detector's 68 points
    (coeffs.npz's detected_landmarks68), and index.html shows it."""
    from recon_tf.metrics import face_region_psnr, psnr

    src, out, _ = run_dir
    summary = json.load(open(out / "summary.json"))
    entry = [e for e in summary["images"] if e["path"].endswith("takeo.ppm")][0]
    scores = entry["faces"][0]["psnr"]
    photo = cv2.cvtColor(cv2.imread(str(src / "takeo.ppm")), cv2.COLOR_BGR2RGB)
    d = out / "takeo"
    mask = cv2.imread(str(d / "face_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    points = np.load(d / "coeffs.npz")["detected_landmarks68"]
    for stage in ("coarse", "fine"):
        render = cv2.cvtColor(cv2.imread(str(d / f"render_{stage}.png")), cv2.COLOR_BGR2RGB)
        expected = face_region_psnr(photo, render, mask, points)
        assert 10.0 < scores[stage] < 60.0
        assert scores[stage] == pytest.approx(expected, abs=0.006)
        # the hull matters: over the whole rendered face the number differs
        assert psnr(photo, render, mask) != pytest.approx(expected, abs=1e-3)
    assert scores["coarse"] != scores["fine"]
    assert "<b>psnr</b>: coarse" in (out / "index.html").read_text()


def test_fine_render_paints_the_eyes_and_mouth(run_dir):
    """The fine fit's mask adds eyes, brows and mouth to the skin
    (``PreparedFace.fine_mask``): there the fine render follows the photo
    much more closely than the coarse render, which the basis cannot paint."""
    from recon_tf.preprocess.skin_mask import excluded_regions

    src, out, _ = run_dir
    d = out / "takeo"
    photo = cv2.imread(str(src / "takeo.ppm")).astype(np.float64)
    truth = read_pts(asset_path("images/faces_68pts/takeo.pts"))
    mask = cv2.imread(str(d / "face_mask.png"), cv2.IMREAD_GRAYSCALE) > 127
    region = mask & (excluded_regions(truth, mask.shape) > 0)
    assert region.sum() > 200
    errors = {}
    for name in ("render_coarse", "render_fine"):
        render = cv2.imread(str(d / f"{name}.png")).astype(np.float64)
        errors[name] = np.mean((render - photo)[region] ** 2)
    # Measured at the test's fast settings: 0.50–0.51 of the coarse error; 0.83 with the
    # skin mask alone.
    assert errors["render_fine"] < 0.65 * errors["render_coarse"], errors


def test_a_face_that_raises_costs_only_itself(tmp_path):
    """An error while fitting or writing one face (a TF op error, a NaN check) is
    recorded for that face; the other faces, photos and the summary are kept."""
    out = str(tmp_path / "out")
    os.makedirs(os.path.join(out, "group", "faces", "1"))
    half = os.path.join(out, "group", "faces", "1", "mesh_coarse.obj")
    open(half, "w").close()
    script = f"""
import json, sys
sys.path.insert(0, {os.path.dirname(TOOL)!r})
import reconstruct as R
R.FLAGS(["reconstruct", "--input=x", "--output={out}", "--batch_size=4"])
class Face:
    def __init__(self, k, n):
        self.info = {{"face_index": k, "num_faces": n}}
class Recon:
    def prepare_all(self, path, max_faces=0):
        n = 2 if "group" in path else 1
        return [Face(k, n) for k in range(n)]
R.build_reconstructor = Recon
calls = []
def fake(recon, faces, out):
    calls.append(len(faces))
    if any(s == "bad" or (s == "group" and f.info["face_index"] == 1) for f, s in faces):
        raise RuntimeError("boom")
    return [{{"face_index": f.info["face_index"], "method": "fit",
              "seconds": {{"fit": 1.0, "fine": 0.0, "write": 0.0}}}} for f, _ in faces]
R.reconstruct_faces = fake
summary = R.run(["a/one.jpg", "a/bad.jpg", "a/group.jpg"], {out!r})
print("RESULT" + json.dumps({{"summary": summary, "calls": calls}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert result["calls"] == [4, 1, 1, 1, 1]  # the batch, then face by face
    images = {os.path.basename(e["path"]): e for e in result["summary"]["images"]}
    assert images["one.jpg"]["status"] == "ok"
    assert images["bad.jpg"]["status"] == "skipped"
    assert images["bad.jpg"]["reason"] == "reconstruction_failed"
    assert "RuntimeError: boom" in images["bad.jpg"]["note"]
    group = images["group.jpg"]
    assert group["status"] == "ok" and group["faces_reconstructed"] == 1
    assert [f["face_index"] for f in group["failed_faces"]] == [1]
    assert not os.path.exists(half)  # the failed face's half-written files are gone
    assert result["summary"]["totals"]["faces"] == 2


def test_the_flags_follow_the_landmark_source_and_a_zero_weight_is_off():
    """3D-FAN marks fixed 3D points, so ``--landmarker=fan`` fits the 3d jaw
    convention unless ``--landmark_convention`` says otherwise; ``--dense_lmk_weight=0``
    turns the FaceMesh term off (it used to fall back to the default); the fit's λ_α
    is its own default unless ``--alpha_weight`` is given, and so is its λ_β for a model
    of bounded blendshapes (ICT) unless ``--beta_weight`` is; a PCA model (no bounds)
    keeps its own."""
    script = f"""
import json, sys
sys.path.insert(0, {os.path.dirname(TOOL)!r})
import reconstruct as R
out = {{}}
for args in ([], ["--landmarker=fan"], ["--landmarker=fan", "--landmark_convention=2d"],
             ["--landmarker=dlib"], ["--dense_lmk_weight=0"], ["--dense_lmk_weight=5e-4"],
             ["--nodense_landmarks", "--dense_lmk_weight=5e-4"], ["--alpha_weight=3e-4"],
             ["--beta_weight=2e-3"]):
    R.FLAGS.unparse_flags()
    R.FLAGS(["reconstruct", *args])
    blendshapes, pca = type("M", (), {{"exp_bounds": [[0, 1]]}}), type("M", (), {{}})
    out[" ".join(args)] = [R.landmark_convention(), R.dense_lmk_weight(), R.fit_alpha_weight(),
                           R.fit_beta_weight(blendshapes), R.fit_beta_weight(pca)]
print("RESULT" + json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("RESULT", 1)[1])
    from recon_tf.dense_landmarks import DEFAULT_DENSE_WEIGHT
    from recon_tf.losses import (
        BLENDSHAPE_BETA_WEIGHT,
        FIT_ALPHA_WEIGHT,
        FIT_BLENDSHAPE_BETA_WEIGHT,
        CoarseLossWeights,
    )

    assert got[""] == ["2d", DEFAULT_DENSE_WEIGHT, FIT_ALPHA_WEIGHT, FIT_BLENDSHAPE_BETA_WEIGHT,
                       None]
    assert FIT_ALPHA_WEIGHT < CoarseLossWeights().alpha_weight  # fitting's prior is weaker
    assert FIT_BLENDSHAPE_BETA_WEIGHT < BLENDSHAPE_BETA_WEIGHT  # and its expression prior
    assert got["--beta_weight=2e-3"][3:] == [2e-3, 2e-3]
    assert got["--alpha_weight=3e-4"][2] == 3e-4
    assert got["--landmarker=fan"][0] == "3d"
    assert got["--landmarker=fan --landmark_convention=2d"][0] == "2d"
    assert got["--landmarker=dlib"][0] == "2d"
    assert got["--dense_lmk_weight=0"][1] == 0.0
    assert got["--dense_lmk_weight=5e-4"][1] == 5e-4
    assert got["--nodense_landmarks --dense_lmk_weight=5e-4"][1] == 0.0


def test_output_stems_are_unique_even_against_other_inputs_names():
    from recon_tf.photo_job import output_stems

    paths = ["x/a.jpg", "y/a.png", "a_2.jpg", "b.jpg", "z/b.jpg", "b_2.tif", "b_3.png"]
    stems = output_stems(paths)
    assert len(set(stems)) == len(paths)
    assert stems[:4] == ["a", "a_3", "a_2", "b"]  # a_2 is another input's own name
    assert stems[4] == "b_4" and stems[5:] == ["b_2", "b_3"]
    assert output_stems(paths) == stems  # the same list gives the same folders (shards)


def test_faces_without_facemesh_points_lean_on_the_shape_prior(face_model):
    """Where FaceMesh ran and its points were left out (unsure of the face, or at odds
    with PFLD), that face's λ_α and λ_β are scaled by unsure_prior_gain, and its info
    records it; without FaceMesh, or at gain 1, nothing changes."""
    from types import SimpleNamespace

    from recon_tf.reconstruction import UNSURE_PRIOR_GAIN, PhotoReconstructor

    def faces():
        return [SimpleNamespace(dense=np.zeros((468, 2)), info={}),
                SimpleNamespace(dense=None, info={})]

    recon = PhotoReconstructor(face_model, None, None, facemesh=object())
    assert recon.unsure_prior_gain == UNSURE_PRIOR_GAIN > 1
    batch = faces()
    np.testing.assert_array_equal(recon.shape_prior_scales(batch), [1.0, UNSURE_PRIOR_GAIN])
    assert "unsure_prior" not in batch[0].info
    assert batch[1].info["unsure_prior"] == UNSURE_PRIOR_GAIN
    assert recon.shape_prior_scales(faces()[:1]) is None  # every face sure
    assert PhotoReconstructor(face_model, None, None).shape_prior_scales(faces()) is None
    off = PhotoReconstructor(face_model, None, None, facemesh=object(), unsure_prior_gain=1.0)
    assert off.shape_prior_scales(faces()) is None


def test_the_gallery_notes_what_was_unusual_about_a_face(tmp_path):
    """index.html's numbers cell says how a face was found and what the pipeline did
    about it; a plain face gets no notes row; faces left out are listed with why."""
    from recon_tf.gallery import face_notes, write_index

    plain = {"face_index": 0, "output": "a", "method": "fit", "loss": {"total": 0.1}}
    odd = {"face_index": 1, "output": "a/faces/1", "method": "rnet+refine60", "rotation": 90.0,
           "mirrored": True, "turned": [180, 0.97], "unsure_prior": 100.0,
           "occluded_fraction": 0.123, "mesh_disagreement": [0.52, "dense term left out"],
           "fine_fell_back": True, "loss": {"total": 0.2}}
    assert face_notes(plain) == []
    notes = face_notes(odd)
    assert len(notes) == 8
    summary = {"images": [{"path": "x/a.jpg", "status": "ok", "num_faces": 3,
                           "faces": [plain, odd],
                           "failed_faces": [{"face_index": 2, "reason": "not_a_face",
                                             "note": "MTCNN 0.944, FaceMesh 0.0005"}]}],
               "totals": {"ok": 1}}
    page = open(write_index(str(tmp_path), summary)).read()
    assert page.count("<b>notes</b>") == 1
    assert "<h2>Faces left out</h2>" in page and "MTCNN 0.944, FaceMesh 0.0005" in page
    for text in ("method rnet+refine60", "turned by 90°", "mirrored photo", "upside down",
                 "shape prior × 100", "12% of the crop", "dense term left out",
                 "fine stage failed"):
        assert text in page
