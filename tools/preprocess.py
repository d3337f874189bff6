"""Preprocess photos or a data set into sharded TFRecords of aligned faces.

    python tools/preprocess.py --input=/data/celeba --dataset=celeba --output=/data/celeba_tfr

For each input: robust decode → MTCNN → 68 landmarks (PFLD by default) →
5-point alignment to ``--image_size``² → skin mask → one ``tf.train.Example``
(schema: ``recon_tf/data/tfrecord.py``). Output:

* ``<output>/shard-00000-of-000NN.tfrecord``: shard k holds the kept faces of
  inputs [k·shard_size, (k+1)·shard_size) in the reader's sorted order;
* ``<output>/shard-…-of-000NN.json``: that shard's per-input statuses, written
  after the shard (both atomically: temporary file + rename), so a shard is
  finished iff its ``.json`` exists;
* ``<output>/manifest.json``: the settings, input list hash, and the face
  model (name + geometry hash) and camera (kind, image size, focal) the crops
  were aligned to (``recon_tf.data.tfrecord.alignment_record``; training
  checks it with ``check_alignment``); a re-run with the same settings skips
  finished shards (resume), different settings refuse to mix with old shards
  unless ``--overwrite``;
* ``<output>/report.json``: every input with its status: ``kept`` (with a
  note when several faces were found and the largest was kept) or
  ``skipped`` with a reason (``no_face``, ``corrupt``, ``not_an_image``,
  ``too_small``, ``too_large``, …), plus a summary.

Work runs in ``--num_workers`` spawned processes (each with its own MTCNN and
ONNX session and 1/N of the CPU threads), or in this process for 1.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Iterator

import numpy as np
from absl import app, flags, logging

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FLAGS = flags.FLAGS
flags.DEFINE_string("input", "", "Input folder (--dataset=folder) or data set root.")
flags.DEFINE_string("output", "", "Output directory for shards and report.json.")
flags.DEFINE_enum("dataset", "folder", ["folder", "celeba", "lfw", "ls3d", "now"],
                  "Layout of --input (see recon_tf/data/readers.py).")
flags.DEFINE_string("split", "", "CelebA split (train/val/test/all; default test) or NoW split "
                    "(validation/test; default validation).")
flags.DEFINE_enum("landmarker", "pfld", ["pfld", "dlib", "fan"], "68-point landmark detector.")
flags.DEFINE_integer("num_workers", 0, "Worker processes; 0 = one per CPU core, 1 = in process.")
flags.DEFINE_integer("shard_size", 1000, "Inputs per shard (the unit of resumption).")
flags.DEFINE_integer("image_size", 224, "Side of the aligned crop in pixels.")
flags.DEFINE_enum("image_format", "png", ["png", "jpeg"], "Encoding of the stored crops.")
flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality when --image_format=jpeg.")
flags.DEFINE_bool("rotate", False, "Also remove in-plane rotation (Deep3DFace does not).")
flags.DEFINE_string("face_model", "", "recon_tf face-model file whose mean landmarks the "
                    "crops are aligned to (default: ICT-FaceKit, bfm.default_face_model_path()).")
flags.DEFINE_enum("camera", "perspective", ["perspective", "orthographic"],
                  "Camera the crops are aligned to (Camera.deep3d(--image_size, --camera)).")
flags.DEFINE_integer("detect_max_side", 1024, "Downscale images to this longer side for "
                     "detection only (0: never).")
flags.DEFINE_integer("min_face_size", 20, "MTCNN minimum face size (detection pixels).")
flags.DEFINE_float("min_confidence", 0.9, "MTCNN minimum face score.")
flags.DEFINE_integer("max_side", 8192, "Images with a longer side are downscaled to it.")
flags.DEFINE_integer("limit", 0, "Process only the first N inputs (0: all).")
flags.DEFINE_bool("overwrite", False, "Delete shards made with different settings.")
flags.DEFINE_float("log_every_s", 10.0, "Seconds between progress lines.")
flags.DEFINE_string("assets_dir", "", "Assets root (default: $RECON_TF_ASSETS or "
                    "../shared/assets).")


@dataclasses.dataclass
class Config:
    """Settings of one preprocessing run (mirrors the flags)."""

    input: str
    output: str
    dataset: str = "folder"
    split: str = ""
    landmarker: str = "pfld"
    num_workers: int = 0
    shard_size: int = 1000
    image_size: int = 224
    image_format: str = "png"
    jpeg_quality: int = 95
    rotate: bool = False
    detect_max_side: int = 1024
    min_face_size: int = 20
    min_confidence: float = 0.9
    max_side: int = 8192
    limit: int = 0
    overwrite: bool = False
    log_every_s: float = 10.0
    assets_dir: str = ""
    face_model: str = ""
    camera: str = "perspective"

    def face_model_path(self) -> str:
        """The face-model file: ``face_model`` or the converted default."""
        if self.face_model:
            return self.face_model
        from bfm import default_face_model_path

        return default_face_model_path()

    def preprocessor_kwargs(self, template_3d: list) -> dict:
        return {"landmarker": self.landmarker, "image_size": self.image_size,
                "template_3d": template_3d, "camera_kind": self.camera,
                "rotate": self.rotate, "image_format": self.image_format,
                "jpeg_quality": self.jpeg_quality, "detect_max_side": self.detect_max_side,
                "min_face_size": self.min_face_size, "min_confidence": self.min_confidence,
                "max_side": self.max_side}


def gather_tasks(config: Config) -> list[dict]:
    """The ordered task list: one dict per input (see ``recon_tf.preprocess.run_task``)."""
    from recon_tf.data.readers import IMAGE_EXTENSIONS, read_dataset, read_folder

    if config.dataset == "folder":
        records = list(read_folder(config.input, images_only=False))
    else:
        records = read_dataset(config.dataset, config.input, config.split or None)
    tasks = []
    for r in records:
        task = {"path": r.image_path, "subject": r.subject,
                "landmarks": None if r.landmarks is None else r.landmarks.tolist()}
        if not r.image_path.lower().endswith(IMAGE_EXTENSIONS):
            task["skip_reason"] = "not_an_image_extension"
            task["note"] = "the file name has no image extension"
        tasks.append(task)
    return tasks[:config.limit] if config.limit > 0 else tasks


def shard_name(index: int, count: int) -> str:
    return f"shard-{index:05d}-of-{count:05d}"


def _write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def alignment_target(config: Config) -> tuple[list, dict]:
    """(template [68, 3] as a list, alignment record) of the configured face model
    and camera (see ``recon_tf.data.tfrecord.alignment_record``)."""
    from recon_tf.data.tfrecord import alignment_record
    from recon_tf.face_model import geometry_hash, load_face_model_arrays
    from recon_tf.preprocess.align import alignment_camera

    arrays = load_face_model_arrays(config.face_model_path())
    template = arrays["mean_shape"][arrays["lmk68"]].astype(float).tolist()
    record = alignment_record(arrays.get("name", "face_model"), geometry_hash(arrays),
                              alignment_camera(config.image_size, config.camera))
    return template, record


def _manifest(config: Config, tasks: list[dict], alignment: dict) -> dict:
    digest = hashlib.sha1("\n".join(t["path"] for t in tasks).encode("utf-8")).hexdigest()
    keys = ("dataset", "split", "landmarker", "shard_size", "image_size", "image_format",
            "jpeg_quality", "rotate", "detect_max_side", "min_face_size", "min_confidence",
            "max_side")
    out = {k: getattr(config, k) for k in keys}
    out.update({"input": os.path.abspath(config.input), "num_inputs": len(tasks),
                "inputs_sha1": digest})
    out.update(alignment)
    return out


def _prepare_output(config: Config, manifest: dict) -> None:
    os.makedirs(config.output, exist_ok=True)
    path = os.path.join(config.output, "manifest.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old != manifest:
            if not config.overwrite:
                changed = sorted(k for k in set(old) | set(manifest)
                                 if old.get(k) != manifest.get(k))
                raise ValueError(f"{config.output} holds shards made with other settings "
                                 f"(changed: {changed}); use a new --output or --overwrite")
            for name in os.listdir(config.output):
                if name.startswith("shard-"):
                    os.remove(os.path.join(config.output, name))
    _write_json(path, manifest)


def _results(config: Config, tasks: list[dict], preprocessor, template_3d: list) -> Iterator:
    """Results in task order, from this process or a pool of spawned workers."""
    from recon_tf import preprocess

    workers = config.num_workers or os.cpu_count() or 1
    kwargs = config.preprocessor_kwargs(template_3d)
    if preprocessor is not None or workers == 1:
        if preprocessor is None:
            preprocessor = preprocess.FacePreprocessor(**kwargs)
        for task in tasks:
            yield preprocess.run_task(preprocessor, task)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=preprocess.init_worker,
                             initargs=(kwargs, config.assets_dir,
                                       threads)) as pool:
        window: collections.deque = collections.deque()
        todo = iter(tasks)
        for task in itertools.islice(todo, 8 * workers):
            window.append(pool.submit(preprocess.process_task, task))
        while window:
            result = window.popleft().result()
            task = next(todo, None)
            if task is not None:
                window.append(pool.submit(preprocess.process_task, task))
            yield result


class _Progress:
    def __init__(self, total: int, every_s: float):
        self.total, self.every_s = total, every_s
        self.done = self.kept = 0
        self.start = self.last = time.time()

    def update(self, kept: bool, force: bool = False) -> None:
        self.done += 1
        self.kept += int(kept)
        now = time.time()
        if force or now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            logging.info("%d/%d inputs (%d kept, %d skipped), %.2f img/s, ETA %s",
                         self.done, self.total, self.kept, self.done - self.kept, rate,
                         time.strftime("%H:%M:%S", time.gmtime(eta)))


def run_preprocessing(config: Config, preprocessor=None) -> dict:
    """Run (or resume) preprocessing; returns the report's summary.

    Args:
      config: the settings.
      preprocessor: an existing ``FacePreprocessor`` to use in this process
        (tests reuse one); None creates them as ``config.num_workers`` says.
    """
    from recon_tf.assets import set_assets_dir
    from recon_tf.data.tfrecord import write_tfrecord
    from recon_tf.preprocess.landmarks import make_landmarker

    if not config.input or not config.output:
        raise ValueError("--input and --output are required")
    if config.assets_dir:
        set_assets_dir(config.assets_dir)
    if preprocessor is None:
        make_landmarker(config.landmarker)  # fail early and clearly if it is unavailable
    if config.shard_size < 1:
        raise ValueError("--shard_size must be ≥ 1")
    tasks = gather_tasks(config)
    if not tasks:
        raise ValueError(f"no inputs found in {config.input} (--dataset={config.dataset})")
    template, alignment = alignment_target(config)
    if preprocessor is not None and (
            preprocessor.camera_kind != config.camera
            or preprocessor.image_size != config.image_size
            or not np.allclose(preprocessor.template_3d, template, atol=1e-6)):
        raise ValueError("the given preprocessor aligns to another face model, camera or "
                         "image size than the config says")
    _prepare_output(config, _manifest(config, tasks, alignment))
    count = math.ceil(len(tasks) / config.shard_size)
    pending = [k for k in range(count) if not os.path.exists(
        os.path.join(config.output, shard_name(k, count) + ".json"))]
    logging.info("%d inputs in %d shards; %d already done, %d to process", len(tasks), count,
                 count - len(pending), len(pending))
    todo = [(k, t) for k in pending
            for t in tasks[k * config.shard_size:(k + 1) * config.shard_size]]
    start = time.time()
    progress = _Progress(len(todo), config.log_every_s)
    results = _results(config, [t for _, t in todo], preprocessor, template)
    for k in pending:
        size = len(tasks[k * config.shard_size:(k + 1) * config.shard_size])
        shard = [next(results) for _ in range(size)]
        for r in shard:
            progress.update(r.status == "kept")
        base = os.path.join(config.output, shard_name(k, count))
        write_tfrecord(base + ".tfrecord", [r.example for r in shard if r.example is not None])
        _write_json(base + ".json", {"inputs": [r.to_json() for r in shard]})
    elapsed = time.time() - start
    return _write_report(config, count, len(todo), elapsed, alignment)


def _write_report(config: Config, count: int, processed: int, elapsed: float,
                  alignment: dict) -> dict:
    entries = []
    for k in range(count):
        with open(os.path.join(config.output, shard_name(k, count) + ".json"),
                  encoding="utf-8") as f:
            for entry in json.load(f)["inputs"]:
                entry["shard"] = shard_name(k, count) + ".tfrecord"
                entries.append(entry)
    reasons = collections.Counter(e.get("reason", "") for e in entries if e["status"] != "kept")
    summary = {
        "inputs": len(entries), "kept": sum(e["status"] == "kept" for e in entries),
        "skipped": sum(e["status"] != "kept" for e in entries),
        "skipped_by_reason": dict(sorted(reasons.items())),
        "several_faces": sum("faces detected" in e.get("note", "") for e in entries),
        "shards": count, "processed_this_run": processed,
        "seconds_this_run": round(elapsed, 2),
        "images_per_second_this_run": round(processed / elapsed, 3) if elapsed > 0 else None,
    }
    _write_json(os.path.join(config.output, "report.json"),
                {"summary": summary, **alignment, "inputs": entries})
    logging.info("done: %s", json.dumps(summary))
    return summary


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.preprocess.landmarks import LandmarkerUnavailableError

    names = [f.name for f in dataclasses.fields(Config)]
    try:
        run_preprocessing(Config(**{n: getattr(FLAGS, n) for n in names}))
    except (ValueError, FileNotFoundError, LandmarkerUnavailableError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    app.run(main)
