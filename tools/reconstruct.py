"""The main job: reconstruct detailed 3D faces from photos.

    python tools/reconstruct.py --input=<photo | folder | list file> --output=<dir>

For every input image the largest face is detected, landmarked (PFLD 68 +
FaceMesh 468), aligned, and its coefficients {α, β, δ, p, γ} are fitted under
the coarse losses of Eq. 6–10 (:mod:`recon_tf.fitting`). Each image gets
``<dir>/<stem>/`` with ``mesh_coarse.obj`` (+ ``.mtl``, ``albedo_coarse.png``),
``mesh_neutral.obj``, ``render_coarse.png``, ``face_mask.png``,
``landmarks68.txt``, ``now_landmarks.txt`` and ``coeffs.npz`` (see
:mod:`recon_tf.reconstruction`). With a trained R-Net (``--model``) its
prediction replaces the fit (``--refine_steps`` fitting steps may follow). The
fine stage (``--fine``, default on) adds ``mesh_fine.obj``, ``albedo.png``,
``displacement.npy``/``.png`` + ``maps.json``, ``normals.png`` and
``render_fine.png``, from trained modules (``--fine_model``) or per-photo fine
fitting. ``<dir>/summary.json`` records every input:
``ok`` with its loss terms and timings, or ``skipped`` with the reason (no
face, corrupt or non-image bytes, ...). A file that fails never stops the run;
a re-run skips images whose outputs are complete (``--overwrite`` redoes them).

A list file is a text file with one image path per line (relative paths are
relative to the list file; ``#`` starts a comment).
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from recon_tf.fine_losses import define_fine_loss_flags
from recon_tf.losses import define_coarse_loss_flags

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "A photo, a folder of photos, or a text file listing photos.")
flags.DEFINE_string("output", "outputs/reconstruct", "Output directory.")
flags.DEFINE_string("face_model", None,
                    "recon_tf face-model .npz (see bfm/); default: ICT-FaceKit from the assets.")
flags.DEFINE_string("assets_dir", None,
                    "Assets root (default: $RECON_TF_ASSETS or ../shared/assets).")
flags.DEFINE_enum("landmarker", "pfld", ["pfld", "dlib", "fan"],
                  "68-point detector (pfld: offline default; fan downloads weights).")
flags.DEFINE_enum("landmark_convention", "2d", ["2d", "3d"],
                  "Jaw contour: 2d = silhouette (PFLD, dlib, iBUG), 3d = fixed vertices (FAN).")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "vggface", "none"],
                  "Frozen face-recognition network of L_id (Eq. 9); none drops L_id.")
flags.DEFINE_bool("dense_landmarks", True,
                  "Add the 468-point FaceMesh term to the fit (see README for its effect).")
flags.DEFINE_bool("detector_landmark_ids", False,
                  "Use the 68 vertices learned for the 2D detector's convention (points 17-67) "
                  "instead of the face model's own lmk68 (see README).")
flags.DEFINE_enum("landmark_weights", "uniform", ["uniform", "deep3d"],
                  "Per-point weights of L_lmk: 1, or Deep3DFace's (20 on nose and inner mouth).")
flags.DEFINE_bool("fit_features", True,
                  "Add brows and lips to the photometric mask of the fit (see README).")
flags.DEFINE_integer("image_size", 224, "Side of the aligned crop the fit works on.")
flags.DEFINE_enum("camera", "perspective", ["perspective", "orthographic"],
                  "Projection Π of Eq. 4.")
flags.DEFINE_integer("batch_size", 4, "Faces fitted together.")
flags.DEFINE_integer("uv_size", 512, "Side of albedo_coarse.png in texels.")
flags.DEFINE_integer("pose_steps", 40, "Fit stage 1: steps on the pose alone.")
flags.DEFINE_integer("landmark_steps", 120, "Fit stage 1: steps on pose, identity, expression.")
flags.DEFINE_bool("landmark_identity", True,
                  "Fit stage 1: also fit the identity to the landmarks.")
flags.DEFINE_float("robust_scale_px", 5.0,
                   "Geman-McClure landmark reweighting after stage 1 (224-crop px; 0 = off).")
flags.DEFINE_list("photo_scales", ["112", "224"], "Fit stage 3: render sizes, coarse to fine.")
flags.DEFINE_list("photo_steps", ["150", "60"], "Fit stage 3: Adam steps per scale.")
flags.DEFINE_string("model", None, "A trained R-Net (experiments/train_coarse.py): its "
                    "SavedModel, run directory or checkpoint. Without it, every face is fitted "
                    "from the mean face.")
flags.DEFINE_integer("refine_steps", 0, "With --model: photometric fitting steps from R-Net's "
                     "prediction (0: R-Net's prediction as is).")
flags.DEFINE_bool("fine", True, "Add the fine stage's outputs (detail albedo, displacement, "
                  "normals, mesh_fine.obj, render_fine.png).")
flags.DEFINE_string("fine_model", None, "Trained fine modules (experiments/train_fine.py run "
                    "directory); without it the detail is fitted per photo.")
flags.DEFINE_integer("fine_steps", 100, "Per-photo fine-fitting Adam steps (no --fine_model).")
flags.DEFINE_integer("fine_uv_size", 256, "Side of the fine stage's UV maps.")
flags.DEFINE_enum("wavelet_source", "uv", ["uv", "crop"], "What the wavelet encoder reads: "
                  "the input unwrapped into UV, or the aligned crop.")
flags.DEFINE_integer("subdivisions", 2, "Midpoint subdivisions of mesh_fine.obj (×4 "
                     "triangles each) before the displacement is baked in.")
flags.DEFINE_bool("overwrite", False, "Redo images whose outputs already exist.")
define_coarse_loss_flags()
define_fine_loss_flags()


def list_inputs(spec: str) -> list[str]:
    """Image paths from a photo, a folder (recursive, sorted) or a list file."""
    from recon_tf.preprocess.image_io import IMAGE_EXTENSIONS

    if os.path.isdir(spec):
        out = []
        for root, _, files in os.walk(spec):
            out += [os.path.join(root, f) for f in files]
        return sorted(p for p in out if p.lower().endswith(IMAGE_EXTENSIONS))
    if not os.path.exists(spec):
        raise app.UsageError(f"--input {spec} does not exist")
    if spec.lower().endswith((".txt", ".lst", ".list")):
        base = os.path.dirname(os.path.abspath(spec))
        with open(spec) as f:
            lines = [ln.split("#", 1)[0].strip() for ln in f]
        return [ln if os.path.isabs(ln) else os.path.join(base, ln) for ln in lines if ln]
    return [spec]


def output_stems(paths: list[str]) -> list[str]:
    """A unique output folder name per input (file stem; ``_2``, ``_3`` on clashes)."""
    seen: dict[str, int] = {}
    stems = []
    for p in paths:
        stem = os.path.splitext(os.path.basename(p))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def build_reconstructor():
    """The face model, fitter, preprocessor and FaceMesh the flags describe."""
    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.face_model import load_face_model
    from recon_tf.fitting import FitSchedule, Fitter
    from recon_tf.losses import weights_from_flags
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.reconstruction import PhotoReconstructor

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    dense = facemesh = None
    overrides = {}
    if FLAGS.dense_landmarks:
        from recon_tf.dense_landmarks import DEFAULT_DENSE_WEIGHT, load_correspondence
        from recon_tf.nets.facemesh import FaceMesh

        facemesh = FaceMesh()
        dense = load_correspondence(face_model, facemesh)
        overrides["dense_lmk_weight"] = FLAGS.dense_lmk_weight or DEFAULT_DENSE_WEIGHT
    identity = None
    if FLAGS.identity_net != "none":
        from recon_tf.nets.identity import make_identity_net

        identity = make_identity_net(FLAGS.identity_net)
    else:
        overrides["id_weight"] = 0.0
    weights = weights_from_flags(face_model, fitting=True, **overrides)
    schedule = FitSchedule(pose_steps=FLAGS.pose_steps, landmark_steps=FLAGS.landmark_steps,
                           landmark_identity=FLAGS.landmark_identity,
                           robust_scale_px=FLAGS.robust_scale_px,
                           photo_scales=tuple(int(s) for s in FLAGS.photo_scales),
                           photo_steps=tuple(int(s) for s in FLAGS.photo_steps))
    preprocessor = FacePreprocessor(landmarker=FLAGS.landmarker, image_size=FLAGS.image_size,
                                    template_3d=face_model.mean_landmarks_3d(),
                                    camera_kind=FLAGS.camera)
    landmark_ids = None
    if FLAGS.detector_landmark_ids:
        from recon_tf.dense_landmarks import detector_landmark_ids

        preprocessor.landmarker_name = FLAGS.landmarker
        landmark_ids = detector_landmark_ids(face_model, preprocessor)
    fitter = Fitter(face_model, weights, schedule, identity_net=identity, dense=dense,
                    image_size=FLAGS.image_size, camera_kind=FLAGS.camera,
                    landmark_convention=FLAGS.landmark_convention, landmark_ids=landmark_ids)
    from recon_tf.landmarks import deep3d_landmark_weights

    weights = deep3d_landmark_weights() if FLAGS.landmark_weights == "deep3d" else None
    predictor = None
    if FLAGS.model:
        from recon_tf.coarse import load_coarse_model

        predictor, meta = load_coarse_model(FLAGS.model, face_model, FLAGS.camera)
        if meta["rnet"]["image_size"] != FLAGS.image_size:
            raise app.UsageError(f"{FLAGS.model} takes {meta['rnet']['image_size']}² crops; "
                                 f"pass --image_size={meta['rnet']['image_size']}")
    return PhotoReconstructor(face_model, fitter, preprocessor, facemesh, FLAGS.uv_size,
                              FLAGS.fit_features, weights, predictor, FLAGS.refine_steps,
                              build_fine(face_model, identity))


def build_fine(face_model, identity):
    """The :class:`recon_tf.reconstruction.FineSettings` the flags describe, or None."""
    if not FLAGS.fine:
        return None
    from recon_tf.fine import FineStage
    from recon_tf.fine_losses import fine_weights_from_flags
    from recon_tf.reconstruction import FineSettings

    weights = fine_weights_from_flags(**({} if identity is not None else {"id_weight": 0.0}))
    stage = FineStage(face_model, FLAGS.fine_uv_size, FLAGS.image_size, FLAGS.camera, weights,
                      identity, FLAGS.wavelet_source)
    modules = (None, None)
    if FLAGS.fine_model:
        from recon_tf.fine import load_fine_modules

        modules = load_fine_modules(FLAGS.fine_model, face_model, FLAGS.fine_uv_size)
    return FineSettings(stage, modules[0], modules[1], FLAGS.fine_steps, FLAGS.subdivisions)


def _complete(out_dir: str) -> bool:
    from recon_tf.reconstruction import FINE_OUTPUT_FILES, OUTPUT_FILES

    files = OUTPUT_FILES + (FINE_OUTPUT_FILES if FLAGS.fine else ())
    return all(os.path.exists(os.path.join(out_dir, f)) for f in files)


def _load_summary(path: str) -> dict:
    if os.path.exists(path):
        try:
            with open(path) as f:
                return {e["path"]: e for e in json.load(f).get("images", [])}
        except (OSError, ValueError, KeyError):
            logging.warning("ignoring unreadable %s", path)
    return {}


def _write_summary(path: str, entries: dict, started: float) -> None:
    images = list(entries.values())
    counts = {s: sum(e["status"] == s for e in images) for s in ("ok", "skipped")}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"images": images, "totals": {**counts, "inputs": len(images),
                                                "seconds": round(time.time() - started, 2)}},
                  f, indent=1)
    os.replace(tmp, path)


def _fine(recon, faces: list, coeffs) -> tuple:
    """((fine outputs, fine terms) or None, seconds)."""
    if recon.fine is None:
        return None, 0.0
    from recon_tf.reconstruction import fine_details

    t0 = time.time()
    fine = fine_details(recon, faces, coeffs)
    return fine, time.time() - t0


def run(paths: list[str], out: str) -> dict:
    """Reconstruct ``paths`` into ``out``; returns the summary entries by path."""
    os.makedirs(out, exist_ok=True)
    summary_path = os.path.join(out, "summary.json")
    entries = _load_summary(summary_path)
    started = time.time()
    todo = []
    for path, stem in zip(paths, output_stems(paths)):
        done = _complete(os.path.join(out, stem))
        if done and not FLAGS.overwrite:
            entries.setdefault(path, {"path": path, "status": "ok", "output": stem})
            continue
        todo.append((path, stem))
    logging.info("%d inputs, %d to do (%d already done)", len(paths), len(todo),
                 len(paths) - len(todo))
    if not todo:
        _write_summary(summary_path, entries, started)
        return entries
    recon = build_reconstructor()
    done_count = 0
    for start in range(0, len(todo), FLAGS.batch_size):
        chunk = todo[start:start + FLAGS.batch_size]
        prepared, t0 = [], time.time()
        for path, stem in chunk:
            item = recon.prepare(path)
            if hasattr(item, "reason"):
                logging.warning("skipped %s: %s (%s)", path, item.reason, item.note)
                entries[path] = {"path": path, "status": "skipped", "reason": item.reason,
                                 "note": item.note}
            else:
                prepared.append((item, stem))
        t_prep = time.time() - t0
        if prepared:
            t0 = time.time()
            faces = [p for p, _ in prepared]
            result = recon.fit(faces)
            t_fit = time.time() - t0
            fine, t_fine = _fine(recon, faces, result.coeffs)
            for i, (face, stem) in enumerate(prepared):
                recon.write(face, result.coeffs[i], os.path.join(out, stem))
                if fine is not None:
                    from recon_tf.reconstruction import write_fine

                    write_fine(recon, face, result.coeffs[i], fine[0], i, os.path.join(out, stem))
                entries[face.path] = {
                    "path": face.path, "status": "ok", "output": stem, "method": recon.method,
                    "loss": {k: round(float(v[i]), 6) for k, v in result.terms.items()},
                    "seconds": {"prepare": round(t_prep / len(chunk), 3),
                                "fit": round(t_fit / len(prepared), 3),
                                "fine": round(t_fine / len(prepared), 3)},
                    **({} if fine is None else {"fine_loss": {
                        k: round(float(v[i]), 6) for k, v in fine[1].items()}}),
                    **{k: v for k, v in face.info.items() if k != "note" or v}}
        done_count += len(chunk)
        _write_summary(summary_path, entries, started)
        elapsed = time.time() - started
        rate = done_count / max(elapsed, 1e-9)
        logging.info("%d/%d images, %.2f img/s, ETA %.0f s", done_count, len(todo), rate,
                     (len(todo) - done_count) / max(rate, 1e-9))
    return entries


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.input:
        raise app.UsageError("--input is required (a photo, a folder or a list file)")
    paths = list_inputs(FLAGS.input)
    if not paths:
        raise app.UsageError(f"no images found in {FLAGS.input}")
    entries = run(paths, FLAGS.output)
    ok = sum(e["status"] == "ok" for e in entries.values())
    print(f"reconstructed {ok} of {len(entries)} images into {FLAGS.output} "
          f"(see {os.path.join(FLAGS.output, 'summary.json')})")


if __name__ == "__main__":
    app.run(main)
