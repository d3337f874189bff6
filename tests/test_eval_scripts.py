"""The evidence scripts behind the README's numbers run end to end (tiny settings):
experiments/fit_eval.py (NME, PSNR, synthetic vertex error),
experiments/fine_eval.py (displacement, albedo and relighting scores) and
experiments/identity_consistency.py (one person's reconstructions alike?)."""

import os
import re
import subprocess
import sys

import pytest

from recon_tf.assets import asset_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST_FIT = ["--pose_steps=20", "--landmark_steps=60", "--photo_scales=112",
            "--photo_steps=30", "--fine=false", "--identity_net=none"]


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", script), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _numbers(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+\.\d+", line)]


def test_fit_eval_scores_the_annotated_photo_and_a_synthetic_face(tmp_path):
    """On a folder of one's own (--photos_dir): the photo in a sub-folder, its
    annotation as menpo's .ljson ((y, x) points), beside an unannotated image."""
    import json
    import shutil

    from recon_tf.data.readers import read_pts

    try:
        pts = read_pts(asset_path("images/faces_68pts/takeo.pts"))
    except FileNotFoundError as err:
        pytest.skip(str(err))
    photos = tmp_path / "photos" / "sub"
    photos.mkdir(parents=True)
    shutil.copy(asset_path("images/faces_68pts/takeo.ppm"), photos / "takeo.ppm")
    (photos / "takeo.ljson").write_text(json.dumps(
        {"version": 3, "groups": {"LJSON": {"landmarks": {"points": pts[:, ::-1].tolist()}}}}))
    shutil.copy(asset_path("images/faces_68pts/takeo.ppm"), photos / "unannotated.ppm")
    out = tmp_path / "out"
    _run("fit_eval.py", f"--photos_dir={photos.parent}", "--num_synthetic=1",
         "--dense_settings=off", f"--output={out}", *FAST_FIT)
    text = (out / "fit_eval.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| sub/")]
    assert [r.split(" | ")[0] for r in rows] == ["| sub/takeo.ppm"], text
    nme_detector, nme_mean, nme_fit, psnr_mean, psnr_fit = _numbers(rows[0])
    assert 0 < nme_detector < 10 and nme_fit < nme_mean  # the fit beats the mean face
    assert psnr_fit > psnr_mean + 2
    synthetic = re.search(r"vertex error (\d+\.\d+) mm \(fit\) vs (\d+\.\d+) mm", text)
    assert synthetic, text
    assert 0 < float(synthetic.group(1)) < 10 and 0 < float(synthetic.group(2)) < 10
    assert (out / "dense_off" / "fit" / "sub" / "takeo" / "landmarks68.txt").exists()


def test_fit_eval_can_fit_the_annotation_itself(tmp_path):
    """--truth_landmarks: the fit gets the annotation's own 68 points (the 'detector'
    column then scores 0) and lands closer to them than the mean face."""
    try:
        asset_path("images/faces_68pts/takeo.pts")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    _run("fit_eval.py", "--photos=takeo.ppm", "--num_synthetic=0", "--dense_settings=off",
         "--truth_landmarks", f"--output={tmp_path}", *FAST_FIT)
    text = (tmp_path / "fit_eval.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| takeo.ppm |"))
    nme_truth, nme_mean, nme_fit, _, _ = _numbers(row)
    assert nme_truth < 0.01 and nme_fit < min(nme_mean, 6.0)


def test_fine_eval_scores_fine_fitting_against_the_truth(tmp_path):
    _run("fine_eval.py", "--num_synthetic=2", "--batch_size=2", "--uv_size=64",
         "--image_size=128", "--fine_steps=20", "--mean_samples=4", f"--output={tmp_path}")
    lines = (tmp_path / "fine_eval.md").read_text().splitlines()
    err, zero, mean_map, corr, psnr_coarse, psnr_fine = _numbers(
        lines[lines.index("|---|---|---|---|---|---|") + 1])
    assert min(err, zero, mean_map) > 0 and -1 <= corr <= 1
    assert psnr_fine > psnr_coarse  # fine fitting explains the image better
    albedo_coarse, albedo_fine, relit_coarse, relit_fine = _numbers(
        lines[lines.index("|---|---|---|---|") + 1])
    assert albedo_fine < albedo_coarse  # the detail went into the albedo map
    assert relit_coarse > 0 and relit_fine > 0


def test_identity_consistency_scores_listed_faces_of_a_reconstruction_folder(tmp_path):
    """Two people, two fitted photos each (coeffs.npz as the main job writes them): the
    same person's neutral shapes are the closer, whatever the expression; a face fitted
    with another face model, or one not reconstructed, is refused by name."""
    import numpy as np

    from bfm import load_default_face_model

    try:
        fm = load_default_face_model()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    rng = np.random.default_rng(3)
    recon = tmp_path / "recon"
    lines = []
    for person in range(2):
        alpha = rng.normal(0, 1.5, fm.layout.id_dim)
        for photo in range(2):
            face = recon / f"p{person}_{photo}" / ("faces/1" if photo else "")
            face.mkdir(parents=True, exist_ok=True)
            np.savez(face / "coeffs.npz", face_model=fm.name,
                     identity=alpha + rng.normal(0, 0.1, alpha.shape),
                     expression=rng.uniform(0, 1, fm.layout.exp_dim))  # not scored
            lines.append(f"{face.relative_to(recon)} person{person}")
    (tmp_path / "ids.txt").write_text("# face identity\n" + "\n".join(lines) + "\n")
    out = tmp_path / "out"
    _run("identity_consistency.py", f"--reconstructions={recon}",
         f"--identities={tmp_path / 'ids.txt'}", f"--output={out}")
    text = (out / "identity_consistency.md").read_text()
    row = [line for line in text.splitlines() if line.startswith("| ") and "mm |" not in line
           and "---" not in line][0]
    same, different, ratio, auc = _numbers(row)[:4]
    assert auc == 1.0 and same < different and ratio > 2, text
    assert len((out / "identity_consistency.csv").read_text().splitlines()) == 1 + 6
    (tmp_path / "ids.txt").write_text("\n".join(lines + ["missing person1"]) + "\n")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "experiments",
                                                        "identity_consistency.py"),
                           f"--reconstructions={recon}", f"--identities={tmp_path / 'ids.txt'}",
                           f"--output={out}"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode != 0 and "missing/coeffs.npz is missing" in proc.stderr
    np.savez(recon / "p0_0" / "coeffs.npz", face_model="bfm", identity=np.zeros(3))
    (tmp_path / "ids.txt").write_text("\n".join(lines) + "\n")
    proc = subprocess.run(proc.args, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode != 0 and "fitted with face model 'bfm'" in proc.stderr
