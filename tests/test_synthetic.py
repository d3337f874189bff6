"""The synthetic ground-truth set: determinism, truth consistency, shards, resume."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER
from recon_tf.data.synthetic import EXTRA_NAMES, SyntheticConfig, SyntheticRenderer
from recon_tf.data.tfrecord import parse_example
from recon_tf.render.renderer import project_landmarks

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def renderer(face_model):
    return SyntheticRenderer(face_model, SyntheticConfig(image_size=96, uv_size=64,
                                                         supersample=2))


def test_examples_are_deterministic_per_seed_and_index(renderer):
    a = renderer.render([renderer.sample(7, 3)])[0]
    b = renderer.render([renderer.sample(7, 3)])[0]
    for key in ("image", "landmarks", "displacement", "albedo_map", "coeffs"):
        np.testing.assert_array_equal(a[key], b[key])
    assert renderer.encode(7, 3, a) == renderer.encode(7, 3, b)
    c = renderer.render([renderer.sample(8, 3)])[0]
    assert not np.array_equal(a["coeffs"], c["coeffs"])
    # rendering in a batch gives the same example as rendering alone
    batch = renderer.render([renderer.sample(7, 2), renderer.sample(7, 3)])
    np.testing.assert_allclose(batch[1]["image"].astype(int), a["image"].astype(int), atol=1)


def test_truth_is_consistent_with_the_image(renderer, face_model):
    samples = [renderer.sample(0, i) for i in range(3)]
    for out in renderer.render(samples):
        coeffs = tf.constant(out["coeffs"][None])
        c = face_model.layout.split(coeffs)
        np.testing.assert_allclose(out["vertices"],
                                   face_model.shape(c.identity, c.expression)[0].numpy(),
                                   atol=1e-5)
        proj = project_landmarks(face_model, coeffs, renderer.camera).numpy()[0] / 2
        np.testing.assert_allclose(out["landmarks"] + PIXEL_CENTER, proj, atol=1e-3)
        assert out["image"].shape == (96, 96, 3) and out["image"].dtype == np.uint8
        mask = out["mask"] > 0
        assert 0.15 < mask.mean() < 0.95
        nose = np.round(out["landmarks"][30]).astype(int)
        assert mask[nose[1], nose[0]]
        disp = out["displacement"][..., 0]
        assert disp.min() < -0.004  # wrinkles are present
        outside = renderer.layout.mask.numpy()[0, ..., 0] == 0
        assert np.all(disp[outside] == 0)
        assert np.all((out["albedo_map"] >= 0) & (out["albedo_map"] <= 1))
        # the face differs from the background where the mask says so
        assert np.abs(out["image"][mask].mean(0) - out["image"][~mask].mean(0)).max() > 1


def _run(cmd, env, check=True):
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed:\n{result.stderr[-3000:]}")
    return result


def test_make_synthetic_writes_shards_and_resumes(tmp_path):
    out = tmp_path / "syn"
    cmd = [sys.executable, os.path.join(REPO, "tools", "make_synthetic.py"), "--num=5",
           "--shard_size=2", "--batch_size=2", "--image_size=64", "--uv_size=32",
           f"--output={out}"]
    env = dict(os.environ, PYTHONPATH=REPO)
    from recon_tf.data.default_sets import synthetic_complete

    assert not synthetic_complete(str(out))
    _run(cmd, env)
    shards = sorted(p for p in os.listdir(out) if p.endswith(".tfrecord"))
    assert shards == [f"synthetic-0000{i}-of-00003.tfrecord" for i in range(3)]
    assert synthetic_complete(str(out))  # the default data skips the tool for this folder
    records = list(tf.data.TFRecordDataset([str(out / s) for s in shards]))
    assert len(records) == 5
    ex = parse_example(records[4], image_size=64, extra_names=EXTRA_NAMES)
    assert ex["displacement"].shape == (32, 32, 1) and ex["albedo_map"].shape == (32, 32, 3)
    assert ex["vertices"].shape[1] == 3 and ex["coeffs"].shape == (222,)
    assert ex["source_path"].numpy().decode().endswith("00000004")
    # kill-and-resume: a missing shard is re-rendered identically, the others untouched
    def parsed(path):
        return [parse_example(r, extra_names=EXTRA_NAMES)
                for r in tf.data.TFRecordDataset(str(path))]

    first = parsed(out / shards[0])
    mtime = os.path.getmtime(out / shards[2])
    os.remove(out / shards[0])
    assert not synthetic_complete(str(out))
    result = _run(cmd, env)
    assert "resuming: 2 of 3 shards" in result.stderr
    again = parsed(out / shards[0])
    for old, new in zip(first, again):  # (protobuf map order may differ between runs)
        for key in ("image", "landmarks", "mask") + EXTRA_NAMES:
            np.testing.assert_array_equal(old[key].numpy(), new[key].numpy())
    assert os.path.getmtime(out / shards[2]) == mtime
    # a different set into the same directory is refused
    bad = _run(cmd[:-1] + [f"--output={out}", "--seed=1"], env, check=False)
    assert bad.returncode != 0 and "another set" in bad.stderr


def test_out_of_model_shape_is_smooth_and_partly_outside_the_identity_basis(renderer,
                                                                           face_model):
    """The stand-in for another face model's faces: the requested RMS over the front face,
    smooth, a good part of it beyond any identity coefficients, the rest of the example
    unchanged, and the rendered truth carries it."""
    import dataclasses

    from recon_tf.data.synthetic import out_of_model_offset

    rms = 0.03  # dm = 3 mm
    oom = SyntheticRenderer(face_model, dataclasses.replace(renderer.config, out_of_model=rms))
    plain, shifted = renderer.sample(5, 1), oom.sample(5, 1)
    assert "shape_offset" not in plain
    # Manifests of sets without it are those written before the option existed.
    assert "out_of_model" not in renderer.config.to_json()
    assert oom.config.to_json()["out_of_model"] == rms
    for key in ("coeffs", "displacement", "albedo_detail", "background"):
        np.testing.assert_array_equal(plain[key], shifted[key])
    offset = shifted["shape_offset"].astype(np.float64)
    front = np.asarray(face_model.arrays["front_mask"]) > 0.5

    def front_rms(x):
        return np.sqrt((x[front] ** 2).sum(-1).mean())

    assert front_rms(offset) == pytest.approx(rms, rel=1e-4)
    # The least-squares identity fit leaves a good part of it unexplained.
    basis = np.asarray(face_model.arrays["id_basis"], np.float64).reshape(-1, offset.size).T
    alpha = np.linalg.lstsq(basis, offset.reshape(-1), rcond=None)[0]
    residual = offset - (basis @ alpha).reshape(-1, 3)
    assert 0.2 < front_rms(residual) / rms < 0.9
    # Smooth: vertices joined by an edge (≈ 2.8 mm) move alike.
    tris = np.asarray(face_model.arrays["triangles"])
    edges = np.concatenate([tris[:, [0, 1]], tris[:, [1, 2]], tris[:, [2, 0]]])
    jump = np.linalg.norm(offset[edges[:, 0]] - offset[edges[:, 1]], axis=1)
    assert np.median(jump) < 0.1 * rms
    # Different draws differ; the rendered truth is the model's shape plus the offset.
    other = out_of_model_offset(np.random.default_rng(0), face_model, rms)
    assert np.abs(other - offset).max() > 0.1 * rms
    a, b = renderer.render([plain])[0], oom.render([shifted])[0]
    np.testing.assert_allclose(b["vertices"] - a["vertices"], offset, atol=1e-5)
    np.testing.assert_array_equal(a["shape_offset"], 0.0)
    assert not np.array_equal(a["image"], b["image"])
