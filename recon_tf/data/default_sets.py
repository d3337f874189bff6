"""The default training data, built on first use, and the check that data fits the model.

With no ``--data``, the training scripts train on a set that a fresh clone can
make with no download (:func:`default_data`), under
``$RECON_TF_CACHE/default_data``:

* ``synthetic_train_<seed>_<num>``: the synthetic set (seed 0,
  ``tools/make_synthetic.py``), with truth extras;
* ``synthetic_eval_<seed>_<num>``: a held-out synthetic set (seed 1000);
* ``photos_<size>_<camera>``: the shared photos (``<assets>/images/faces``)
  preprocessed by ``tools/preprocess.py`` (MTCNN, PFLD, alignment, skin mask).

The tools run as subprocesses (both are resumable, so an interrupted build
finishes on the next run); a set that is already complete is not handed to them
again (:func:`synthetic_complete`, the photos' ``report.json``).
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

from absl import logging

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_SEED, EVAL_SEED = 0, 1000


def _run_tool(args: list[str]) -> None:
    cmd = [sys.executable] + args
    logging.info("building default data: %s", " ".join(cmd))
    subprocess.run(cmd, check=True, cwd=ROOT)


def synthetic_complete(folder: str) -> bool:
    """Whether ``tools/make_synthetic.py`` finished ``folder``: its ``manifest.json``
    and every shard it names exist (shards are renamed into place when whole). The
    manifest's face model is checked later, by :func:`check_data`."""
    from recon_tf.data.synthetic import shard_path

    try:
        with open(os.path.join(folder, "manifest.json")) as f:
            manifest = json.load(f)
        num_shards = -(-int(manifest["num"]) // int(manifest["shard_size"]))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return all(os.path.exists(shard_path(folder, s, num_shards)) for s in range(num_shards))


def default_data(image_size: int = 224, camera: str = "perspective",
                 face_model_path: str | None = None, train_num: int = 512,
                 eval_num: int = 64) -> tuple[list[str], list[str]]:
    """Build (once) and return the default (training globs, held-out globs)."""
    from recon_tf.assets import asset_path, assets_dir, cache_dir

    root = os.path.join(cache_dir(), "default_data")
    extra = [f"--assets_dir={assets_dir()}"]
    if face_model_path:
        extra.append(f"--face_model={face_model_path}")
    sets = {}
    for name, seed, num in (("synthetic_train", TRAIN_SEED, train_num),
                            ("synthetic_eval", EVAL_SEED, eval_num)):
        out = os.path.join(root, f"{name}_{seed}_{num}_{image_size}")
        if not synthetic_complete(out):
            _run_tool(["tools/make_synthetic.py", f"--num={num}", f"--seed={seed}",
                       f"--output={out}", f"--image_size={image_size}"] + extra)
        sets[name] = os.path.join(out, "*.tfrecord")
    photos = os.path.join(root, f"photos_{image_size}_{camera}")
    if not os.path.exists(os.path.join(photos, "report.json")):
        _run_tool(["tools/preprocess.py", f"--input={asset_path('images/faces')}",
                   f"--output={photos}", f"--image_size={image_size}", f"--camera={camera}",
                   "--num_workers=1", "--shard_size=8", f"--face_model={face_model_path or ''}"]
                  + extra[:1])
    return ([sets["synthetic_train"], os.path.join(photos, "shard-*.tfrecord")],
            [sets["synthetic_eval"]])


def check_data(globs: list[str], face_model, camera) -> list[str]:
    """The files of ``globs``, each folder's ``manifest.json`` checked against the
    face model (and, for preprocessed photos, the alignment camera).

    Raises:
      FileNotFoundError: no file matches.
      ValueError: data made for another face model or camera, or preprocessed
        photos whose manifest does not say which (an older tools/preprocess.py).
        A folder without ``manifest.json`` is only warned about (data written by
        other tools).
    """
    from recon_tf.data.tfrecord import check_alignment

    files = sorted(f for g in globs for f in glob.glob(g))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {globs}")
    for folder in sorted({os.path.dirname(f) for f in files}):
        path = os.path.join(folder, "manifest.json")
        if not os.path.exists(path):
            logging.warning("%s has no manifest.json; alignment not checked", folder)
            continue
        with open(path) as f:
            manifest = json.load(f)
        if isinstance(manifest.get("face_model"), str) and "camera" not in manifest:
            # A synthetic set (tools/make_synthetic.py): rendered, not aligned.
            if manifest["face_model"] != face_model.name:
                raise ValueError(f"{folder} was rendered with face model "
                                 f"{manifest['face_model']!r}, not {face_model.name!r}")
            continue
        try:  # preprocessed photos; a manifest without the record is refused too
            check_alignment(manifest, face_model.name, face_model.geometry_hash, camera)
        except ValueError as err:
            raise ValueError(f"{folder}: {err}") from None
    return files


def training_files(data: list[str], eval_data: list[str], face_model, image_size: int = 224,
                   camera_kind: str = "perspective", face_model_path: str | None = None,
                   train_num: int = 512, eval_num: int = 64) -> tuple[list[str], list[str]]:
    """(training files, held-out files) of a training script: the ``data`` and
    ``eval_data`` globs, or the default data (held-out defaults to the default
    held-out set only when ``data`` is empty), each checked by :func:`check_data`."""
    from recon_tf.camera import Camera

    train_globs, eval_globs = list(data), list(eval_data)
    if not train_globs:
        train_globs, default_eval = default_data(image_size, camera_kind, face_model_path,
                                                 train_num, eval_num)
        eval_globs = eval_globs or default_eval
    camera = Camera.deep3d(image_size, kind=camera_kind)
    return (check_data(train_globs, face_model, camera),
            check_data(eval_globs, face_model, camera) if eval_globs else [])
