"""R-Net training end to end: experiments/train_coarse.py and the machinery it uses.

In-process: the coarse training step overfits a batch (losses fall, predictions
leave the mean face); mismatched run directories and face models are refused.
Subprocesses of the script (small backbone, 64-pixel crops, no L_id): the NaN
guard (exit code 3, last checkpoint untouched), SIGKILL then resume, SavedModel
export (same coefficients as the checkpoint) and TensorBoard logs. Slow: two
``MultiWorkerMirroredStrategy`` workers on localhost (``tests/_train_mw_driver.py``).
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "train_coarse.py")
DRIVER = os.path.join(ROOT, "tests", "_train_mw_driver.py")
SIZE = 64
SHARD = 8
TIMEOUT = 300  # seconds for any subprocess: a hang fails instead of blocking


# ------------------------------------------------------------------ helpers
@pytest.fixture(scope="session")
def syn_glob(tmp_path_factory):
    """16 synthetic 64-pixel faces (seed 0) in 2 shards of 8."""
    out = tmp_path_factory.mktemp("syn64")
    proc = subprocess.run(
        [sys.executable, "tools/make_synthetic.py", "--num=16", "--seed=0", f"--output={out}",
         f"--image_size={SIZE}", "--supersample=1", f"--shard_size={SHARD}"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(glob.glob(str(out / "*.tfrecord"))) == 2
    return str(out / "*.tfrecord")


def _train_args(data: str, model_dir: str, **flags) -> list[str]:
    values = {"data": data, "backbone": "small", "image_size": SIZE, "batch_size": 2,
              "identity_net": "none", "model_dir": model_dir, "log_every_s": 0,
              "summary_every": 1, "image_every": 0, "eval_every": 0, "export": "false",
              "seed": 0}
    values.update(flags)
    return [sys.executable, SCRIPT] + [f"--{k}={v}" for k, v in values.items()]


def _run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)


def _batch(data: str, count: int = 4, extra_names=()) -> dict:
    from recon_tf.data.pipeline import make_dataset

    return next(iter(make_dataset(data, count, training=False, image_size=SIZE,
                                  extra_names=extra_names)))


def _latest_step(run_dir: str) -> int | None:
    """The step of the checkpoint the run's ``checkpoint`` state file points to."""
    try:
        with open(os.path.join(run_dir, "checkpoint")) as f:
            match = re.search(r'model_checkpoint_path: "ckpt-(\d+)"', f.read())
    except FileNotFoundError:
        return None
    return int(match.group(1)) if match else None


def _snapshot(run_dir: str) -> dict:
    """name → bytes of the run's checkpoint files and state."""
    names = [n for n in os.listdir(run_dir) if n.startswith("ckpt-") or n == "checkpoint"]
    out = {}
    for name in names:
        with open(os.path.join(run_dir, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture(scope="module")
def exported_run(syn_glob, tmp_path_factory):
    """A 2-step script run: checkpoints 1 and 2, summaries, held-out eval, SavedModel."""
    run_dir = str(tmp_path_factory.mktemp("exported") / "run")
    proc = _run(_train_args(syn_glob, run_dir, steps=2, checkpoint_every=1, export="true",
                            image_every=1, eval_every=1, eval_batches=1, eval_data=syn_glob))
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "finished at step 2" in proc.stderr
    return run_dir


# --------------------------------------------------------- 1. loss goes down
def test_training_step_overfits_a_batch(face_model, syn_glob):
    import keras

    from recon_tf import coarse, training
    from recon_tf.fitting import Fitter
    from recon_tf.losses import CoarseLossWeights
    from recon_tf.nets import rnet

    keras.utils.set_random_seed(0)
    batch = _batch(syn_glob, 4, extra_names=("coeffs",))
    truth = face_model.layout.split(batch.pop("coeffs"))
    batch = training.strip_strings(coarse.mark_landmark_source(batch))  # as the script
    objective = Fitter(face_model, CoarseLossWeights.for_model(face_model, id_weight=0.0),
                       identity_net=None, image_size=SIZE)
    model = rnet.build_rnet("small", face_model.layout, SIZE, exp_bounds=face_model.exp_bounds)
    optimizer = keras.optimizers.Adam(1e-4)
    stage = coarse.CoarseStage(model, objective)
    step = coarse.make_train_step(stage, optimizer, tf.distribute.get_strategy(), 4)

    history = [{k: float(v) for k, v in step(batch).items()} for _ in range(20)]
    first = history[0]  # the untrained R-Net: the mean face
    coeffs, terms = stage.terms(batch, training=True)
    final = {k: float(tf.reduce_mean(v)) for k, v in terms.items()}
    assert all(np.isfinite(h["total"]) and np.isfinite(h["grad_norm"]) for h in history)
    assert first["pho"] > 0 and first["lmk"] > 0 and first["reg"] == 0.0
    assert final["total"] < 0.5 * first["total"], (first, final)
    assert final["pho"] < 0.7 * first["pho"], (first, final)
    assert final["lmk"] < 0.5 * first["lmk"], (first, final)

    # The predictions left the mean face (zero coefficients) towards the truth.
    params = objective.split(coeffs)
    assert float(tf.reduce_max(tf.abs(params["identity"]))) > 0.05
    assert float(tf.reduce_max(tf.abs(params["angles"]))) > 0.01
    mean_face = objective.objective(objective.split(tf.zeros_like(coeffs)),
                                    stage.fit_data(batch), SIZE, True, False, None)
    assert abs(float(tf.reduce_mean(mean_face["lmk"])) - first["lmk"]) < 1e-3 * first["lmk"]
    assert final["lmk"] < 0.5 * float(tf.reduce_mean(mean_face["lmk"]))
    angle_error = float(tf.reduce_mean(tf.abs(params["angles"] - truth.angles)))
    assert angle_error < float(tf.reduce_mean(tf.abs(truth.angles)))


# ------------------------------------------------------------- 2. NaN guard
def _write_nan_shard(data: str, out_dir: str, count: int = 4) -> str:
    """A shard of ``count`` synthetic crops whose 68 landmarks are all NaN."""
    from recon_tf.data.tfrecord import encode_example, write_tfrecord

    batch = _batch(data, count)
    records = []
    for i in range(count):
        image = np.round(batch["image"][i].numpy() * 255.0).astype(np.uint8)
        mask = (batch["mask"][i, ..., 0].numpy() > 0.5).astype(np.uint8) * 255
        landmarks = np.full((68, 2), np.nan, np.float32)
        records.append(encode_example(image, landmarks, mask, f"nan/{i}",
                                      batch["transform"][i].numpy()))
    os.makedirs(out_dir)
    path = os.path.join(out_dir, "nan-00000-of-00001.tfrecord")
    write_tfrecord(path, records)
    assert np.isnan(_batch(path, count)["landmarks"].numpy()).all()
    return path


def test_non_finite_loss_exits_3_and_keeps_checkpoint(exported_run, syn_glob, tmp_path):
    run_dir = str(tmp_path / "run")
    shutil.copytree(exported_run, run_dir)
    assert _latest_step(run_dir) == 2
    before = _snapshot(run_dir)
    assert {"ckpt-2.index", "checkpoint"} <= set(before)
    nan_data = _write_nan_shard(syn_glob, str(tmp_path / "nan"))

    proc = _run(_train_args(nan_data, run_dir, steps=5, checkpoint_every=1))
    assert proc.returncode == 3, proc.stderr[-4000:]
    assert re.search(r"resumed from \S*ckpt-2 \(step 2\)", proc.stderr)
    assert re.search(r"step 3: loss nan, gradient norm nan is not finite", proc.stderr), \
        proc.stderr[-4000:]
    assert "finished at step" not in proc.stderr
    assert _snapshot(run_dir) == before  # no ckpt-3+, ckpt-1/2 and the state byte-identical
    assert tf.train.latest_checkpoint(run_dir) == os.path.join(run_dir, "ckpt-2")


# ------------------------------------------------------- 3. SIGKILL, resume
def test_sigkill_then_rerun_resumes(syn_glob, tmp_path):
    steps, every = 12, 2
    run_dir = str(tmp_path / "run")
    args = _train_args(syn_glob, run_dir, steps=steps, checkpoint_every=every)
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + TIMEOUT
            while (_latest_step(run_dir) or 0) < 2:
                assert proc.poll() is None, "the run ended before its first checkpoint:\n" + \
                    log_path.read_text()[-4000:]
                assert time.time() < deadline, "no checkpoint within the timeout"
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL
    killed_at = _latest_step(run_dir)
    logged = [int(s) for s in re.findall(rf"step (\d+)/{steps} ", log_path.read_text())]
    last_done = max(logged, default=0)
    assert 2 <= killed_at < steps
    assert not os.path.exists(os.path.join(run_dir, f"ckpt-{steps}.index"))

    proc = _run(args)  # the exact same command
    assert proc.returncode == 0, proc.stderr[-4000:]
    match = re.search(r"resumed from \S*ckpt-(\d+) \(step (\d+)\)", proc.stderr)
    assert match, proc.stderr[-4000:]
    restart = int(match.group(2))
    assert int(match.group(1)) == restart == killed_at >= 2
    assert last_done - restart <= every  # at most one checkpoint interval lost
    resumed = [int(s) for s in re.findall(rf"step (\d+)/{steps} ", proc.stderr)]
    assert resumed and min(resumed) == restart + 1 and max(resumed) == steps
    assert f"finished at step {steps}" in proc.stderr
    assert os.path.exists(os.path.join(run_dir, f"ckpt-{steps}.index"))
    assert _latest_step(run_dir) == steps


# ------------------------------------------------------------- 4. refusal
def test_mismatched_runs_are_refused(face_model, exported_run, tmp_path):
    from recon_tf import coarse, training
    from recon_tf.nets import rnet
    from recon_tf.training import CheckpointMismatchError

    meta = coarse.model_meta(face_model, rnet.rnet_config("small", face_model.layout, SIZE),
                             "perspective")
    assert training.read_meta(exported_run) == meta  # what the script recorded
    strategy = tf.distribute.get_strategy()
    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    other_backbone = {**meta, "rnet": rnet.rnet_config("resnet50", face_model.layout, SIZE)}
    other_hash = {**meta, "geometry_hash": "0" * 40}

    for name, stored, key, value in [("a", other_backbone, "rnet", "'backbone': 'resnet50'"),
                                     ("b", other_hash, "geometry_hash", "0" * 40)]:
        run_dir = str(tmp_path / name)
        training.write_meta(run_dir, stored)
        with pytest.raises(CheckpointMismatchError) as err:
            training.CheckpointKeeper(checkpoint, run_dir, meta, strategy)
        message = str(err.value)
        assert f"{key}: checkpoint has" in message and value in message, message
        others = {"rnet", "geometry_hash", "face_model", "camera", "stage"} - {key}
        assert not any(f"{k}: checkpoint has" in message for k in others), message
        assert training.read_meta(run_dir) == stored  # not overwritten
    # The script's own run directory, resumed for another backbone.
    with pytest.raises(CheckpointMismatchError, match="'backbone': 'small'"):
        training.CheckpointKeeper(checkpoint, exported_run, other_backbone, strategy)
    # Control: the matching meta is accepted.
    training.write_meta(str(tmp_path / "ok"), meta)
    training.CheckpointKeeper(checkpoint, str(tmp_path / "ok"), meta, strategy)

    saved = os.path.join(exported_run, "saved_model")
    renamed = types.SimpleNamespace(name="bfm2009", geometry_hash=face_model.geometry_hash,
                                    exp_bounds=face_model.exp_bounds)
    rehashed = types.SimpleNamespace(name=face_model.name, geometry_hash="f" * 40,
                                     exp_bounds=face_model.exp_bounds)
    for path in (saved, exported_run, os.path.join(exported_run, "ckpt-2")):
        with pytest.raises(CheckpointMismatchError) as err:
            coarse.load_coarse_model(path, renamed)
        assert "face_model: checkpoint has 'ict_facekit'" in str(err.value)
        assert "geometry_hash" not in str(err.value)
        with pytest.raises(CheckpointMismatchError) as err:
            coarse.load_coarse_model(path, rehashed)
        assert "geometry_hash: checkpoint has" in str(err.value) and "f" * 40 in str(err.value)
        assert "face_model:" not in str(err.value)
        with pytest.raises(CheckpointMismatchError, match="camera: checkpoint has 'perspective'"):
            coarse.load_coarse_model(path, face_model, camera_kind="orthographic")


# ----------------------------------------------- 5. export and TensorBoard
def test_export_matches_checkpoint_and_logs(face_model, exported_run, syn_glob):
    from recon_tf import coarse

    images = _batch(syn_glob, 4)["image"].numpy()
    saved = os.path.join(exported_run, "saved_model")
    serve, saved_meta = coarse.load_coarse_model(saved, face_model)
    restore, run_meta = coarse.load_coarse_model(exported_run, face_model)
    restore_2, _ = coarse.load_coarse_model(os.path.join(exported_run, "ckpt-2"), face_model)
    assert saved_meta == run_meta
    a, b = serve(images).numpy(), restore(images).numpy()
    total = face_model.layout.total
    assert a.shape == b.shape == (4, total)
    assert np.abs(a).max() > 1e-4  # trained: not the zero-initialised head
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(restore_2(images).numpy(), b, rtol=1e-5, atol=1e-6)

    signature = tf.saved_model.load(saved).signatures["serving_default"]
    out = signature(images=tf.constant(images))
    assert set(out) == {"coeffs", "vertices", "landmarks68"}
    n = face_model.num_vertices
    assert out["coeffs"].shape == (4, total) and out["coeffs"].dtype == tf.float32
    assert out["vertices"].shape == (4, n, 3) and out["landmarks68"].shape == (4, 68, 2)
    np.testing.assert_allclose(out["coeffs"].numpy(), a, rtol=1e-5, atol=1e-6)
    c = face_model.layout.split(out["coeffs"])
    model_units = face_model.shape(c.identity, c.expression).numpy()
    np.testing.assert_allclose(out["vertices"].numpy(), model_units * coarse.DM_TO_MM,
                               rtol=1e-4, atol=1e-2)
    width_mm = np.ptp(out["vertices"].numpy()[..., 0], axis=1)
    assert np.all((width_mm > 50) & (width_mm < 400)), width_mm  # a face, in millimetres
    lmk = out["landmarks68"].numpy()
    assert np.isfinite(lmk).all() and (lmk > -0.5).mean() > 0.9 and (lmk < SIZE).mean() > 0.9

    events = glob.glob(os.path.join(exported_run, "train", "events.out.tfevents.*"))
    assert events
    tags: dict[str, set] = {}
    image_shape = None
    for path in events:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                tags.setdefault((value.tag, plugin), set()).add(event.step)
                if value.tag == "input_render_overlay":
                    image_shape = [int(v) for v in value.tensor.string_val[:2]]  # width, height
    for tag in ("loss/total", "loss/pho", "loss/lmk", "learning_rate", "eval/vertex_error_mm"):
        assert tags.get((tag, "scalars")) == {1, 2}, (tag, sorted(tags))
    assert tags.get(("input_render_overlay", "images")) == {1, 2}, sorted(tags)
    assert image_shape == [3 * SIZE, 4 * SIZE]  # input | render | overlay, 4 rows


# ------------------------------------------------------- 6. multi-worker
def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _source_paths(path: str) -> set[str]:
    from recon_tf.data.tfrecord import SOURCE_PATH

    return {tf.train.Example.FromString(r.numpy()).features.feature[SOURCE_PATH]
            .bytes_list.value[0].decode() for r in tf.data.TFRecordDataset(path)}


@pytest.mark.slow
def test_multi_worker_mirrored_training(syn_glob, tmp_path):
    shards = sorted(glob.glob(syn_glob))
    assert len(shards) == 2
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    jobs = {}
    for i in range(2):
        tf_config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        jobs[f"w{i}"] = ({**base, "TF_CONFIG": json.dumps(tf_config)}, [])
    jobs["single"] = (base, ["--emulate_workers=2"])
    procs, logs = {}, {}
    try:
        for name, (env, extra) in jobs.items():
            logs[name] = tmp_path / f"{name}.log"
            with open(logs[name], "w") as log:
                procs[name] = subprocess.Popen(
                    [sys.executable, DRIVER, f"--data={syn_glob}", "--steps=3",
                     "--batch_size=4", f"--out={tmp_path / name}.npz"] + extra,
                    cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + TIMEOUT
        for name, proc in procs.items():
            try:
                proc.wait(timeout=max(deadline - time.time(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{name} hung:\n{logs[name].read_text()[-4000:]}")
            assert proc.returncode == 0, f"{name}:\n{logs[name].read_text()[-4000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    w0, w1, single = (np.load(tmp_path / f"{n}.npz") for n in ("w0", "w1", "single"))
    assert (int(w0["replicas"]), int(w0["workers"]), int(w0["task_id"])) == (2, 2, 0)
    assert (int(w1["replicas"]), int(w1["workers"]), int(w1["task_id"])) == (2, 2, 1)
    assert int(single["replicas"]) == 1
    # Each worker read its own shard (every 2nd file), 2 of the global 4 per step.
    for worker, shard in ((w0, shards[0]), (w1, shards[1])):
        assert len(worker["first_paths"]) == 2
        assert set(worker["first_paths"].tolist()) <= _source_paths(shard)

    trainable = [f"w{j:04d}" for j in single["trainable_index"]]
    assert len(trainable) >= 20  # the small backbone's 10 convolutions + the head
    # The all-reduce kept the workers' trainable weights in sync ...
    for key in trainable:
        np.testing.assert_allclose(w0[key], w1[key], rtol=0, atol=1e-6, err_msg=key)
    np.testing.assert_allclose(w0["losses"], w1["losses"], rtol=1e-6)

    def distance(x, y):
        return float(np.sqrt(sum(np.sum(np.square(x(k) - y(k))) for k in trainable)))

    def emulated(key):
        return single[f"emulated_t{trainable.index(key):04d}"]

    # ... they equal one process running both workers' batches (gradients summed),
    # and differ from the single worker that read both shards itself.
    to_single = distance(lambda k: w0[k], lambda k: single[k])
    to_emulated = distance(lambda k: w0[k], emulated)
    assert to_single > 0.1, to_single
    assert to_emulated < 0.01 * to_single, (to_emulated, to_single)
    np.testing.assert_allclose(w0["losses"], single["emulated_losses"], rtol=1e-4)
    assert not np.allclose(w0["losses"], single["losses"], rtol=1e-3)


@pytest.mark.slow
def test_the_script_trains_as_two_workers_sharing_one_run_directory(syn_glob, tmp_path):
    """experiments/train_coarse.py itself under MultiWorkerMirroredStrategy (TF_CONFIG,
    two processes on localhost, one --model_dir): both finish, only the chief
    writes checkpoints, run_meta.json and the SavedModel, no worker temp dirs stay,
    and a re-run of both resumes from the chief's last checkpoint."""
    run_dir = tmp_path / "run"
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    base = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}

    def both(steps: int, export: str) -> list[str]:
        procs, logs = [], []
        try:
            for i in range(2):
                logs.append(tmp_path / f"w{i}_{steps}.log")
                env = {**base, "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": i}})}
                with open(logs[-1], "w") as log:
                    procs.append(subprocess.Popen(
                        _train_args(syn_glob, str(run_dir), steps=steps, batch_size=4,
                                    checkpoint_every=1, export=export),
                        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
            deadline = time.time() + TIMEOUT
            for proc, log in zip(procs, logs):
                try:
                    proc.wait(timeout=max(deadline - time.time(), 1))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"hung:\n{log.read_text()[-4000:]}")
                assert proc.returncode == 0, log.read_text()[-4000:]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        return [log.read_text() for log in logs]

    logs = both(2, "true")
    for text in logs:
        assert "2 replicas" in text and "finished at step 2" in text, text[-3000:]
    assert "exported" in logs[0] and "exported" not in logs[1]
    names = set(os.listdir(run_dir))
    assert {"ckpt-1.index", "ckpt-2.index", "checkpoint", "run_meta.json",
            "saved_model"} <= names
    assert not [n for n in names if n.startswith("workertemp")], names
    assert tf.train.latest_checkpoint(str(run_dir)).endswith("ckpt-2")
    logs = both(3, "false")
    for text in logs:
        assert "(step 2)" in text and "finished at step 3" in text, text[-3000:]
    assert _latest_step(str(run_dir)) == 3
