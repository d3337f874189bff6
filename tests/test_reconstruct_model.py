"""The main job with a trained R-Net: --model (SavedModel or checkpoint) and --refine_steps."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from recon_tf.assets import asset_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "reconstruct.py")
FAST = ["--uv_size=64", "--dense_landmarks=false", "--identity_net=none", "--fine=false"]


def _run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, TOOL, *args], env=env, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, face_model):
    """A small R-Net whose head bias predicts known, non-zero coefficients."""
    from recon_tf import coarse
    from recon_tf.fitting import Fitter
    from recon_tf.nets import rnet

    model = rnet.build_rnet("small", face_model.layout, 224, exp_bounds=face_model.exp_bounds)
    bias = np.zeros(face_model.layout.total, np.float32)
    offsets = face_model.layout.offsets
    bias[offsets["identity"][0]:offsets["identity"][0] + 3] = [1.0, -0.5, 0.3]
    bias[offsets["angles"][0] + 1] = 0.05
    model.get_layer("coeffs").bias.assign(bias)
    meta = coarse.model_meta(face_model, rnet.rnet_config("small", face_model.layout, 224),
                             "perspective")
    path = str(tmp_path_factory.mktemp("model") / "saved_model")
    coarse.export_saved_model(model, Fitter(face_model), path, meta)
    return path, bias


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    try:
        photo = asset_path("images/faces_68pts/takeo.ppm")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    src = tmp_path_factory.mktemp("inputs")
    shutil.copy(photo, src / "takeo.ppm")
    return src


def test_model_prediction_is_used_and_refinement_moves_it(exported, photo_dir, tmp_path):
    path, bias = exported
    plain = tmp_path / "rnet"
    result = _run(f"--input={photo_dir}", f"--output={plain}", f"--model={path}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    coeffs = np.load(plain / "takeo" / "coeffs.npz")["coeffs"]
    np.testing.assert_allclose(coeffs, bias, atol=1e-5)  # R-Net's prediction, untouched
    entry = json.load(open(plain / "summary.json"))["images"][0]["faces"][0]
    assert entry["method"] == "rnet"

    refined = tmp_path / "refined"
    result = _run(f"--input={photo_dir}", f"--output={refined}", f"--model={path}",
                  "--refine_steps=15", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    entry2 = json.load(open(refined / "summary.json"))["images"][0]["faces"][0]
    assert entry2["method"] == "rnet+refine15"
    coeffs2 = np.load(refined / "takeo" / "coeffs.npz")["coeffs"]
    assert np.abs(coeffs2 - bias).max() > 1e-3
    assert entry2["loss"]["total"] < entry["loss"]["total"]
    # without the fine stage only the coarse render is scored; refinement explains more
    assert set(entry["psnr"]) == set(entry2["psnr"]) == {"coarse", "region"}
    assert entry2["psnr"]["coarse"] > entry["psnr"]["coarse"]


def test_model_for_another_face_model_is_refused(exported, photo_dir, tmp_path):
    path, _ = exported
    other = tmp_path / "other_model"
    shutil.copytree(path, other)
    meta_path = other / "run_meta.json"
    meta = json.load(open(meta_path))
    meta["geometry_hash"] = "0" * 16
    json.dump(meta, open(meta_path, "w"))
    result = _run(f"--input={photo_dir}", f"--output={tmp_path / 'out'}", f"--model={other}",
                  *FAST)
    assert result.returncode != 0
    assert "geometry_hash" in result.stderr and "another setup" in result.stderr
