"""Fine-stage training end to end (experiments/train_fine.py), and its modules in the main job."""

import glob
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "train_fine.py")
SIZE, UV = 64, 32
TIMEOUT = 600


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def syn_glob(tmp_path_factory):
    """8 synthetic 64-pixel faces with 32² truth displacement maps, in 2 shards."""
    out = tmp_path_factory.mktemp("syn_fine")
    proc = _run([sys.executable, "tools/make_synthetic.py", "--num=8", "--seed=3",
                 f"--output={out}", f"--image_size={SIZE}", "--supersample=1",
                 f"--uv_size={UV}", "--shard_size=4"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    return str(out / "*.tfrecord")


@pytest.fixture(scope="module")
def coarse_model(face_model, tmp_path_factory):
    """An untrained small R-Net at 64², exported as a SavedModel (the frozen coarse stage)."""
    from recon_tf import coarse
    from recon_tf.fitting import Fitter
    from recon_tf.nets import rnet

    model = rnet.build_rnet("small", face_model.layout, SIZE, exp_bounds=face_model.exp_bounds)
    meta = coarse.model_meta(face_model, rnet.rnet_config("small", face_model.layout, SIZE),
                             "perspective")
    path = str(tmp_path_factory.mktemp("coarse") / "saved_model")
    coarse.export_saved_model(model, Fitter(face_model, image_size=SIZE), path, meta)
    return path


def _args(data: str, coarse: str, model_dir: str, **flags) -> list[str]:
    values = {"data": data, "eval_data": data, "coarse_model": coarse, "model_dir": model_dir,
              "image_size": SIZE, "uv_size": UV, "depth": 3, "base_filters": 8,
              "identity_net": "none", "batch_size": 2, "log_every_s": 0, "summary_every": 1,
              "eval_batches": 1, "seed": 0}
    values.update(flags)
    return [sys.executable, SCRIPT] + [f"--{k}={v}" for k, v in values.items()]


@pytest.fixture(scope="module")
def fine_run(syn_glob, coarse_model, tmp_path_factory):
    run_dir = str(tmp_path_factory.mktemp("fine") / "run")
    proc = _run(_args(syn_glob, coarse_model, run_dir, steps=3, checkpoint_every=1,
                      eval_every=3, image_every=3))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, proc


def _scalars_and_images(run_dir: str) -> tuple[set, set]:
    from tensorflow.core.util import event_pb2

    scalars, images = set(), set()
    for path in glob.glob(os.path.join(run_dir, "train", "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                meta = value.metadata.plugin_data.plugin_name
                (images if meta == "images" else scalars).add(value.tag)
    return scalars, images


def test_fine_run_checkpoints_logs_evaluates_and_exports(fine_run, face_model):
    run_dir, proc = fine_run
    assert "finished at step 3" in proc.stderr
    assert "held-out" in proc.stderr and "displacement_error_mm" in proc.stderr
    assert os.path.exists(os.path.join(run_dir, "ckpt-3.index"))
    meta = json.load(open(os.path.join(run_dir, "run_meta.json")))
    assert meta["stage"] == "fine" and meta["fine"]["uv_size"] == UV
    scalars, images = _scalars_and_images(run_dir)
    assert {"loss/total", "loss/pho", "loss/alb", "loss/smo",
            "eval/displacement_error_mm", "eval/mean_map_error_mm",
            "eval/displacement_correlation"} <= scalars
    assert images
    from recon_tf.fine import load_fine_saved_model

    loaded = load_fine_saved_model(os.path.join(run_dir, "saved_model"))
    out = loaded.signatures["serving_default"](images=tf.random.uniform([2, SIZE, SIZE, 3]))
    assert out["coeffs"].shape == (2, face_model.layout.total)
    assert out["albedo_map"].shape == (2, UV, UV, 3)
    assert out["displacement_mm"].shape == (2, UV, UV, 1)
    assert out["normal_map"].shape == (2, UV, UV, 3)


def test_fine_run_resumes_and_refuses_another_configuration(fine_run, syn_glob, coarse_model):
    run_dir, _ = fine_run
    proc = _run(_args(syn_glob, coarse_model, run_dir, steps=4, checkpoint_every=1,
                      eval_every=0, image_every=0, export="false"))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resumed from" in proc.stderr and "(step 3)" in proc.stderr
    assert os.path.exists(os.path.join(run_dir, "ckpt-4.index"))
    proc = _run(_args(syn_glob, coarse_model, run_dir, steps=5, use_wavelet="false",
                      export="false"))
    assert proc.returncode != 0
    assert "use_wavelet" in proc.stderr and "another setup" in proc.stderr


def test_fine_run_stops_on_a_non_finite_loss_and_keeps_its_checkpoints(fine_run, syn_glob,
                                                                        coarse_model, tmp_path):
    """The NaN/Inf guard of the coarse script holds for the fine one: a NaN loss
    (here λ_pho = NaN) exits with code 3 before any update or save, and the
    checkpoints of the run are left byte-identical."""
    run_dir = str(tmp_path / "run")
    shutil.copytree(fine_run[0], run_dir)
    names = sorted(n for n in os.listdir(run_dir) if n.startswith("ckpt-") or n == "checkpoint")

    def snapshot():
        return {n: open(os.path.join(run_dir, n), "rb").read() for n in names}

    before = snapshot()
    latest = tf.train.latest_checkpoint(run_dir)
    proc = _run(_args(syn_glob, coarse_model, run_dir, steps=20, checkpoint_every=1,
                      eval_every=0, image_every=0, export="false", fine_pho_weight="nan"))
    assert proc.returncode == 3, proc.stderr[-4000:]
    assert "is not finite" in proc.stderr, proc.stderr[-4000:]
    assert sorted(n for n in os.listdir(run_dir)
                  if n.startswith("ckpt-") or n == "checkpoint") == names
    assert snapshot() == before
    assert tf.train.latest_checkpoint(run_dir) == latest


def _first_scalar(run_dir: str, tag: str) -> float:
    from tensorflow.core.util import event_pb2

    values = []
    for path in glob.glob(os.path.join(run_dir, "train", "events.*")):
        for record in tf.data.TFRecordDataset(path):
            event = event_pb2.Event.FromString(record.numpy())
            values += [(event.step, tf.make_ndarray(v.tensor).item())
                       for v in event.summary.value if v.tag == tag]
    return min(values)[1]


def test_truth_coarse_trains_modules_on_the_true_faces(fine_run, syn_glob, tmp_path):
    """--coarse_model=truth: the synthetic records' own coefficients are the coarse
    face, so the first step's L_pho is far below that of an untrained R-Net's face;
    records without coefficients are refused; no SavedModel, the run directory is
    what the main job loads."""
    run_dir = str(tmp_path / "truth")
    proc = _run(_args(syn_glob, "truth", run_dir, steps=2, checkpoint_every=1,
                      eval_every=2, image_every=2))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "held-out" in proc.stderr and "--fine_model=" in proc.stderr
    assert not os.path.exists(os.path.join(run_dir, "saved_model"))
    assert json.load(open(os.path.join(run_dir, "run_meta.json")))["coarse"] == "truth"
    truth_pho = _first_scalar(run_dir, "loss/pho")
    rnet_pho = _first_scalar(fine_run[0], "loss/pho")
    assert truth_pho < 0.5 * rnet_pho, (truth_pho, rnet_pho)
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in glob.glob(syn_glob):  # the same records, minus their truth
        writer = tf.io.TFRecordWriter(str(photos / os.path.basename(f)))
        for record in tf.data.TFRecordDataset(f):
            example = tf.train.Example.FromString(record.numpy())
            feature = example.features.feature
            names = [n for n in feature["extra/names"].bytes_list.value if n != b"coeffs"]
            del feature["extra/coeffs"], feature["extra/names"].bytes_list.value[:]
            feature["extra/names"].bytes_list.value.extend(names)
            writer.write(example.SerializeToString())
        writer.close()
    proc = _run(_args(str(photos / "*.tfrecord"), "truth", str(tmp_path / "t2"), steps=1))
    assert proc.returncode != 0 and "true coefficients" in proc.stderr


def test_missing_coarse_model_is_named(syn_glob, tmp_path):
    proc = _run(_args(syn_glob, str(tmp_path / "nowhere"), str(tmp_path / "run"), steps=1))
    assert proc.returncode != 0
    assert "train_coarse.py" in proc.stderr


def test_trained_modules_serve_the_main_job(fine_run, face_model, tmp_path):
    from recon_tf.assets import asset_path
    from recon_tf.fine import load_fine_modules

    run_dir, _ = fine_run
    albedo, disp, config = load_fine_modules(run_dir, face_model, UV)
    assert albedo is not None and disp is not None and config["depth"] == 3
    with pytest.raises(ValueError, match="fine_uv_size"):
        load_fine_modules(run_dir, face_model, 2 * UV)
    try:
        photo = asset_path("images/faces_68pts/takeo.ppm")
    except FileNotFoundError as err:
        pytest.skip(str(err))
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(photo, src / "takeo.ppm")
    out = tmp_path / "out"
    proc = _run([sys.executable, "tools/reconstruct.py", f"--input={src}", f"--output={out}",
                 f"--fine_model={run_dir}", f"--fine_uv_size={UV}", "--subdivisions=0",
                 "--pose_steps=10", "--landmark_steps=20", "--photo_scales=112",
                 "--photo_steps=10", "--uv_size=64", "--dense_landmarks=false",
                 "--identity_net=none"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    disp_map = np.load(out / "takeo" / "displacement.npy")
    assert disp_map.shape == (UV, UV)
    assert (out / "takeo" / "render_fine.png").exists()
