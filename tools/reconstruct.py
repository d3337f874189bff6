"""The main job: reconstruct detailed 3D faces from photos.

    python tools/reconstruct.py --input=<photo | folder | list file> --output=<dir>

Every face found in every input image is detected, landmarked (PFLD 68 +
FaceMesh 468), aligned, and its coefficients {α, β, δ, p, γ} are fitted under
the coarse losses of Eq. 6–10 (:mod:`recon_tf.fitting`). The largest face of an
image gets ``<dir>/<stem>/``, the others ``<dir>/<stem>/faces/<k>/`` (k = 1, 2, …
by decreasing size), each with ``mesh_coarse.obj`` (+ ``.mtl``,
``albedo_coarse.png``), ``mesh_neutral.obj``, ``render_coarse.png``,
``face_mask.png``, ``landmarks68.txt``, ``now_landmarks.txt``,
``now_landmarks_neutral.txt`` and ``coeffs.npz``
(see :mod:`recon_tf.reconstruction`). With a trained R-Net (``--model``) its
prediction replaces the fit (``--refine_steps`` fitting steps may follow). The
fine stage (``--fine``, default on) adds ``mesh_fine.obj``, ``albedo.png``,
``displacement.npy``/``.png`` + ``maps.json``, ``normals.png`` and
``render_fine.png``, from trained modules (``--fine_model``) or per-photo fine
fitting. ``--previews`` (default on) adds the gallery images ``thumb_*.jpg`` and
``geometry_views.png`` (:mod:`recon_tf.gallery`).

``<dir>/summary.json`` records every input: ``ok`` with its faces, their loss
terms and timings per stage, or ``skipped`` with the reason (no face, corrupt,
truncated or non-image bytes, too small, too large, ...), plus the run's totals;
``<dir>/index.html`` shows every face in a browser. A file that fails never
stops the run; a re-run skips images whose outputs are complete
(``--overwrite`` redoes them); ``--shard=i/n`` lets n processes share one
input list and output folder (:mod:`recon_tf.photo_job`).

A list file is a text file with one image path per line (relative paths are
relative to the list file; ``#`` starts a comment).
"""

from __future__ import annotations

import os
import time

import numpy as np
from absl import app, flags, logging

from recon_tf.fit_data import YAW_PRIOR_GAIN, YAW_STARTS
from recon_tf.losses import define_coarse_loss_flags, define_fine_loss_flags
from recon_tf.reconstruction import UNSURE_PRIOR_GAIN

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "A photo, a folder of photos, or a text file listing photos.")
flags.DEFINE_string("output", "outputs/reconstruct", "Output directory.")
flags.DEFINE_string("face_model", None,
                    "recon_tf face-model .npz (see bfm/); default: ICT-FaceKit from the assets.")
flags.DEFINE_string("assets_dir", None,
                    "Assets root (default: $RECON_TF_ASSETS or ../shared/assets).")
flags.DEFINE_enum("landmarker", "pfld", ["pfld", "dlib", "fan"],
                  "68-point detector (pfld: offline default; fan downloads weights).")
flags.DEFINE_enum("landmark_convention", None, ["2d", "3d"],
                  "Jaw contour: 2d = silhouette (PFLD, dlib, iBUG), 3d = fixed vertices (FAN); "
                  "default: the --landmarker's own (3d for fan, else 2d).")
flags.DEFINE_bool("jaw_slide", True, "2d convention: each jaw point slides along the fitted "
                  "outline to the point nearest the detected one (the landmark term sees only "
                  "the outline's distance; recon_tf.landmarks.ContourLandmarks.slide_jaw).")
flags.DEFINE_bool("calibrated_landmarks", True,
                  "landmarks68.txt: report points 17-67 on the face model's lmk68_output "
                  "vertices (where 2D annotators put them on fitted faces; "
                  "tools/calibrate_landmarks.py) instead of the fitted lmk68 vertices. "
                  "The fit is the same either way. Ignored with --detector_landmark_ids.")
flags.DEFINE_enum("identity_net", "faceres", ["faceres", "mobilefacenet", "vggface", "none"],
                  "Frozen face-recognition network of L_id (Eq. 9); none drops L_id.")
flags.DEFINE_bool("dense_landmarks", True,
                  "Add the 468-point FaceMesh term to the fit (see README for its effect).")
flags.DEFINE_bool("verify_faces", True,
                  "Keep faces MTCNN scores 0.6-0.9 when FaceMesh's face score is >= 0.5 (finds "
                  "faces MTCNN's R-Net drops; see README, Face detection).")
flags.DEFINE_bool("mirror_detection", True,
                  "With --verify_faces: also search the mirrored photo and keep the faces "
                  "found only there when FaceMesh's face score is >= 0.5 (MTCNN is not "
                  "mirror-symmetric; +0.6 s per photo).")
flags.DEFINE_list("rotated_detection", ["45", "-45", "90", "-90", "180"],
                  "With --verify_faces: when no face is found upright, search the photo "
                  "turned by these angles (degrees, counter-clockwise) and keep the faces "
                  "FaceMesh scores >= 0.9 (MTCNN misses faces rolled by more than ~40 "
                  "degrees); empty: off.")
flags.DEFINE_integer("detect_max_side", 1024,
                     "MTCNN searches a copy of the photo downscaled to this longer side "
                     "(faces under ~60 px in a 12 MP photo are then missed); 0 searches at "
                     "full size. Larger values find smaller faces in group photos, at "
                     "roughly (side / 1024)^2 times the detection time.")
flags.DEFINE_bool("frame_faces", True,
                  "With --verify_faces: run FaceMesh on the whole photo and add the face "
                  "that fills the frame when MTCNN missed it (tight face crops; README, "
                  "Face detection).")
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
flags.DEFINE_list("yaw_starts", [f"{a:g}" for a in YAW_STARTS],
                  "Fit stage 1: yaws (degrees) the pose steps start from; each face keeps "
                  "the start that fits its landmarks best (one value: a single start).")
flags.DEFINE_integer("landmark_steps", 120, "Fit stage 1: steps on pose, identity, expression.")
flags.DEFINE_bool("landmark_identity", True,
                  "Fit stage 1: also fit the identity to the landmarks.")
flags.DEFINE_float("robust_scale_px", 5.0,
                   "Geman-McClure landmark reweighting after stage 1 (224-crop px; 0 = off).")
flags.DEFINE_bool("robust_dense", True, "Reweight the FaceMesh points the same way as the 68 "
                  "(FaceMesh puts points the fitted face hides on the visible outline).")
flags.DEFINE_float("yaw_prior_gain", YAW_PRIOR_GAIN,
                   "Pose-dependent shape prior: lambda_alpha and lambda_beta x (1 + k sin^2(yaw)) "
                   "per face after the pose and landmark stages (0 = off, the plain prior; "
                   "turned faces fit better with it; README, 'Large poses').")
flags.DEFINE_float("unsure_prior_gain", UNSURE_PRIOR_GAIN,
                   "Multiplier of lambda_alpha and lambda_beta for a face whose FaceMesh points "
                   "were left out (FaceMesh unsure of it, or at odds with the 68 points): its "
                   "landmarks are unreliable there (near-profile views, heavy occlusion), so "
                   "identity and expression lean on their priors (1 = off).")
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
flags.DEFINE_integer("fine_steps", 100, "Per-photo fine-fitting steps (no --fine_model; "
                     "momentum SGD on RMS-normalised gradients, FineStage.fit).")
flags.DEFINE_bool("fine_denoise", True, "Per-photo fine fitting reads the photo through a "
                  "Wiener filter at its own measured noise level (recon_tf.denoise), so that "
                  "grain does not become albedo detail; a clean photo is left as it is.")
flags.DEFINE_integer("fine_uv_size", 256, "Side of the fine stage's UV maps.")
flags.DEFINE_enum("wavelet_source", "uv", ["uv", "crop"], "What the wavelet encoder reads: "
                  "the input unwrapped into UV, or the aligned crop.")
flags.DEFINE_integer("subdivisions", 2, "Midpoint subdivisions of mesh_fine.obj (×4 "
                     "triangles each) before the displacement is baked in.")
flags.DEFINE_bool("overwrite", False, "Redo images whose outputs already exist.")
flags.DEFINE_string("shard", "", "i/n: this process reconstructs inputs i, i + n, i + 2n, ... "
                    "of the list (processes or machines sharing one --output); empty = all.")
flags.DEFINE_integer("max_faces", 0, "Faces reconstructed per photo, largest first (0 = all).")
flags.DEFINE_bool("previews", True, "Write the gallery images (thumb_*.jpg, "
                  "geometry_views.png) of each face; index.html links them.")
define_coarse_loss_flags()
define_fine_loss_flags()


def landmark_convention() -> str:
    """The jaw-contour convention of the fit: ``--landmark_convention`` when given,
    else the ``--landmarker``'s own (3D-FAN marks fixed 3D points; PFLD and dlib
    the visible silhouette)."""
    if FLAGS.landmark_convention:
        return FLAGS.landmark_convention
    return "3d" if FLAGS.landmarker == "fan" else "2d"


def dense_lmk_weight() -> float:
    """Weight of the dense FaceMesh term: 0 without ``--dense_landmarks``, else
    ``--dense_lmk_weight`` when given (0 = off), else the fit's default
    (:data:`recon_tf.dense_landmarks.DEFAULT_DENSE_WEIGHT`)."""
    from recon_tf.dense_landmarks import DEFAULT_DENSE_WEIGHT

    if not FLAGS.dense_landmarks:
        return 0.0
    return DEFAULT_DENSE_WEIGHT if FLAGS.dense_lmk_weight is None else FLAGS.dense_lmk_weight


def fit_alpha_weight() -> float:
    """λ_α of the fit: ``--alpha_weight`` when given, else
    :data:`recon_tf.losses.FIT_ALPHA_WEIGHT` (weaker than training's; see there)."""
    from recon_tf.losses import FIT_ALPHA_WEIGHT

    return FIT_ALPHA_WEIGHT if FLAGS.alpha_weight is None else FLAGS.alpha_weight


def fit_beta_weight(face_model) -> float | None:
    """λ_β of the fit: ``--beta_weight`` when given, else for a model of bounded
    blendshapes :data:`recon_tf.losses.FIT_BLENDSHAPE_BETA_WEIGHT` (weaker than
    training's; see there), else None (the model's default)."""
    from recon_tf.losses import FIT_BLENDSHAPE_BETA_WEIGHT, bounded_expressions

    if FLAGS.beta_weight is not None:
        return FLAGS.beta_weight
    return FIT_BLENDSHAPE_BETA_WEIGHT if bounded_expressions(face_model) else None


def build_reconstructor():
    """The face model, fitter, preprocessor and FaceMesh the flags describe."""
    from bfm import load_default_face_model
    from recon_tf import assets
    from recon_tf.face_model import load_face_model
    from recon_tf.fit_data import FitSchedule
    from recon_tf.fitting import Fitter
    from recon_tf.losses import weights_from_flags
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.reconstruction import PhotoReconstructor

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    face_model = (load_face_model(FLAGS.face_model) if FLAGS.face_model
                  else load_default_face_model())
    dense = facemesh = None
    overrides = {"dense_lmk_weight": dense_lmk_weight(), "alpha_weight": fit_alpha_weight(),
                 "beta_weight": fit_beta_weight(face_model)}
    if FLAGS.dense_landmarks or FLAGS.verify_faces:  # also the upside-down / PFLD checks
        from recon_tf.nets.facemesh import FaceMesh

        facemesh = FaceMesh()
    if overrides["dense_lmk_weight"] > 0:
        from recon_tf.dense_landmarks import load_correspondence

        dense = load_correspondence(face_model, facemesh)
    identity = None
    if FLAGS.identity_net != "none":
        from recon_tf.nets.identity import make_identity_net

        identity = make_identity_net(FLAGS.identity_net)
    else:
        overrides["id_weight"] = 0.0
    weights = weights_from_flags(face_model, **overrides)
    schedule = FitSchedule(pose_steps=FLAGS.pose_steps,
                           yaw_starts=tuple(float(a) for a in FLAGS.yaw_starts),
                           landmark_steps=FLAGS.landmark_steps,
                           landmark_identity=FLAGS.landmark_identity,
                           robust_scale_px=FLAGS.robust_scale_px,
                           robust_dense=FLAGS.robust_dense,
                           yaw_prior_gain=FLAGS.yaw_prior_gain,
                           photo_scales=tuple(int(s) for s in FLAGS.photo_scales),
                           photo_steps=tuple(int(s) for s in FLAGS.photo_steps))
    preprocessor = FacePreprocessor(landmarker=FLAGS.landmarker, image_size=FLAGS.image_size,
                                    detect_max_side=FLAGS.detect_max_side,
                                    template_3d=face_model.mean_landmarks_3d(),
                                    camera_kind=FLAGS.camera,
                                    face_verifier=facemesh.face_score if FLAGS.verify_faces
                                    else None,
                                    mirror_pass=FLAGS.verify_faces and FLAGS.mirror_detection,
                                    rotations=tuple(float(a) for a in FLAGS.rotated_detection)
                                    if FLAGS.verify_faces else (),
                                    face_framer=facemesh.detect
                                    if FLAGS.verify_faces and FLAGS.frame_faces else None)
    landmark_ids = None
    if FLAGS.detector_landmark_ids:
        from recon_tf.dense_landmarks import detector_landmark_ids

        preprocessor.landmarker_name = FLAGS.landmarker
        landmark_ids = detector_landmark_ids(face_model, preprocessor)
    fitter = Fitter(face_model, weights, schedule, identity_net=identity, dense=dense,
                    image_size=FLAGS.image_size, camera_kind=FLAGS.camera,
                    landmark_convention=landmark_convention(), landmark_ids=landmark_ids,
                    jaw_slide=FLAGS.jaw_slide)
    from recon_tf.landmarks import deep3d_landmark_weights

    weights = deep3d_landmark_weights() if FLAGS.landmark_weights == "deep3d" else None
    predictor = None
    if FLAGS.model:
        from recon_tf.coarse import load_coarse_model

        predictor, meta = load_coarse_model(FLAGS.model, face_model, FLAGS.camera)
        if meta["rnet"]["image_size"] != FLAGS.image_size:
            raise app.UsageError(f"{FLAGS.model} takes {meta['rnet']['image_size']}² crops; "
                                 f"pass --image_size={meta['rnet']['image_size']}")
    return PhotoReconstructor(face_model, fitter, preprocessor,
                              facemesh if FLAGS.dense_landmarks else None, FLAGS.uv_size,
                              FLAGS.fit_features, weights, predictor, FLAGS.refine_steps,
                              build_fine(face_model, identity),
                              face_model.lmk68_output
                              if FLAGS.calibrated_landmarks and landmark_ids is None else None,
                              unsure_prior_gain=FLAGS.unsure_prior_gain)


def build_fine(face_model, identity):
    """The :class:`recon_tf.photo_fine.FineSettings` the flags describe, or None."""
    if not FLAGS.fine:
        return None
    from recon_tf.fine import FineStage
    from recon_tf.losses import fine_weights_from_flags
    from recon_tf.photo_fine import FineSettings

    weights = fine_weights_from_flags(**({} if identity is not None else {"id_weight": 0.0}))
    stage = FineStage(face_model, FLAGS.fine_uv_size, FLAGS.image_size, FLAGS.camera, weights,
                      identity, FLAGS.wavelet_source)
    modules = (None, None)
    if FLAGS.fine_model:
        from recon_tf.fine import load_fine_modules

        modules = load_fine_modules(FLAGS.fine_model, face_model, FLAGS.fine_uv_size)
    return FineSettings(stage, modules[0], modules[1], FLAGS.fine_steps, FLAGS.subdivisions,
                        FLAGS.fine_denoise)


def _output_files() -> tuple[str, ...]:
    from recon_tf.gallery import PREVIEW_FILES
    from recon_tf.photo_fine import FINE_OUTPUT_FILES
    from recon_tf.reconstruction import OUTPUT_FILES

    return (OUTPUT_FILES + (FINE_OUTPUT_FILES if FLAGS.fine else ())
            + (PREVIEW_FILES if FLAGS.previews else ())
            + (("thumb_fine.jpg",) if FLAGS.previews and FLAGS.fine else ()))


def _round(values: dict, i: int) -> dict:
    return {k: round(float(v[i]), 6) for k, v in values.items()}


def reconstruct_faces(recon, faces: list, out: str) -> list[dict]:
    """Fit, detail and write B prepared faces; returns one summary entry per face."""
    from recon_tf.photo_job import face_folder
    from recon_tf.reconstruction import render_psnr

    t0 = time.time()
    result = recon.fit([f for f, _ in faces])
    t_fit = (time.time() - t0) / len(faces)
    faces, result, entries = _without_false_fits(faces, result)
    if not faces:
        return entries
    fine, t_fine = None, 0.0
    if recon.fine is not None:
        from recon_tf.photo_fine import fine_details

        t0 = time.time()
        fine = fine_details(recon, [f for f, _ in faces], result.coeffs)
        t_fine = (time.time() - t0) / len(faces)
    for i, (face, stem) in enumerate(faces):
        t0 = time.time()
        k = face.info.get("face_index", 0)
        folder = face_folder(stem, k)
        out_dir = os.path.join(out, folder)
        recon.write(face, result.coeffs[i], out_dir)
        normals = None
        if fine is not None:
            from recon_tf.photo_fine import write_fine

            write_fine(recon, face, result.coeffs[i], fine[0], i, out_dir)
            normals = fine[0].detail_normals[i].numpy()
        if FLAGS.previews:
            from recon_tf.gallery import write_face_previews

            write_face_previews(recon.face_model, face, result.coeffs[i], out_dir, normals)
        entries.append({
            "face_index": k, "output": folder, "method": recon.method,
            "psnr": render_psnr(face, out_dir, fine=fine is not None),
            "loss": _round(result.terms, i),
            **({} if fine is None else {
                "fine_loss": _round({n: v for n, v in fine[1].items()
                                     if n not in ("fell_back", "noise_sigma")}, i)}),
            **({"fine_fell_back": True} if fine is not None and fine[1]["fell_back"][i] else {}),
            **({"fine_noise_sigma": round(float(fine[1]["noise_sigma"][i]), 3)}
               if fine is not None and "noise_sigma" in fine[1] else {}),
            "seconds": {"fit": round(t_fit, 3), "fine": round(t_fine, 3),
                        "write": round(time.time() - t0, 3)},
            **{key: v for key, v in face.info.items()
               if key not in ("face_index", "num_faces") and (key != "note" or v)}})
    return entries


def _without_false_fits(faces: list, result) -> tuple[list, object, list[dict]]:
    """(faces, fit result, entries) without the faces whose fit says they are no face
    (:func:`recon_tf.photo_faces.false_fits`); each of those gets a ``not_a_face`` entry."""
    from recon_tf.photo_faces import FALSE_FIT_LMK, false_fits

    drop = false_fits([f.info for f, _ in faces], result.terms["lmk"])
    if not drop:
        return faces, result, []
    entries = [{"face_index": faces[i][0].info.get("face_index", 0), "reason": "not_a_face",
                "note": "MTCNN {:.3f}, fitted landmark term {:.1f} > {:g}".format(
                    faces[i][0].info.get("confidence", float("nan")),
                    float(result.terms["lmk"][i]), FALSE_FIT_LMK)} for i in drop]
    keep = [i for i in range(len(faces)) if i not in drop]
    result = result._replace(coeffs=result.coeffs[keep],
                             terms={k: np.asarray(v)[keep] for k, v in result.terms.items()})
    return [faces[i] for i in keep], result, entries


def reconstruct_guarded(recon, faces: list, out: str) -> list[dict]:
    """:func:`reconstruct_faces`, but an error costs only the face that raised it.

    A batch that raises is retried face by face; a face that still raises gets
    ``{"face_index", "reason": "reconstruction_failed", "note": <the error>}``
    and the run goes on.
    """
    try:
        return reconstruct_faces(recon, faces, out)
    except Exception as err:  # noqa: BLE001 - one face must not stop a long run
        if len(faces) > 1:
            return [e for face in faces for e in reconstruct_guarded(recon, [face], out)]
        from recon_tf.photo_job import face_folder

        face, stem = faces[0]
        k = face.info.get("face_index", 0)
        logging.exception("reconstructing face %d of %s failed", k, stem)
        for name in _output_files():  # no half-written face folder (its faces/ stay)
            path = os.path.join(out, face_folder(stem, k), name)
            if os.path.isfile(path):
                os.remove(path)
        return [{"face_index": k, "reason": "reconstruction_failed",
                 "note": f"{type(err).__name__}: {err}".splitlines()[0][:300]}]


def _photo_entry(path: str, stem: str, faces: list[dict], prepared_info: dict,
                 t_prepare: float) -> dict:
    failed = list(prepared_info.get("failed_faces", [])) + [f for f in faces if "reason" in f]
    faces = [f for f in faces if "reason" not in f]
    if not faces:
        return {"path": path, "status": "skipped", "output": stem, "reason": failed[0]["reason"],
                "note": failed[0]["note"], "seconds": {"prepare": round(t_prepare, 3)}}
    seconds = {"prepare": round(t_prepare, 3)}
    for stage in ("fit", "fine", "write"):
        seconds[stage] = round(sum(f["seconds"][stage] for f in faces), 3)
    seconds["total"] = round(sum(seconds.values()), 3)
    faces = sorted(faces, key=lambda f: f["face_index"])
    return {"path": path, "status": "ok", "output": stem,
            "num_faces": prepared_info.get("num_faces", len(faces)),
            "faces_reconstructed": len(faces), "faces": faces, "seconds": seconds,
            **({"failed_faces": sorted(failed, key=lambda f: f["face_index"])} if failed else {})}


def run(paths: list[str], out: str, ignored: list[str] | None = None) -> dict:
    """Reconstruct this process's shard of ``paths`` into ``out``; returns the summary
    (``ignored``: the input folder's other files, listed in it)."""
    from recon_tf.photo_job import (
        JobProgress,
        is_complete,
        output_stems,
        parse_shard,
        select_shard,
        write_record,
        write_summary,
    )

    os.makedirs(out, exist_ok=True)
    started = time.time()
    stems = output_stems(paths)
    mine = select_shard(list(zip(paths, stems)), *parse_shard(FLAGS.shard))
    files = _output_files()
    todo = [(p, s) for p, s in mine if FLAGS.overwrite or not is_complete(out, s, files)]
    logging.info("%d inputs, %d in this shard (%s), %d to do", len(paths), len(mine),
                 FLAGS.shard or "0/1", len(todo))
    if todo:
        recon = build_reconstructor()
        progress = JobProgress(len(todo))
        faces_done = 0
        for start in range(0, len(todo), FLAGS.batch_size):
            pending, photos = [], {}
            for path, stem in todo[start:start + FLAGS.batch_size]:
                t0 = time.time()
                items = recon.prepare_all(path, FLAGS.max_faces)
                t_prep = time.time() - t0
                if hasattr(items, "reason"):
                    logging.warning("skipped %s: %s (%s)", path, items.reason, items.note)
                    write_record(out, stem, {"path": path, "status": "skipped", "output": stem,
                                             "reason": items.reason, "note": items.note,
                                             "seconds": {"prepare": round(t_prep, 3)}})
                    continue
                photos[stem] = (path, items[0].info, t_prep, [])
                pending += [(face, stem) for face in items]
            for b in range(0, len(pending), FLAGS.batch_size):
                batch = pending[b:b + FLAGS.batch_size]
                for (_, stem), entry in zip(batch, reconstruct_guarded(recon, batch, out)):
                    photos[stem][3].append(entry)
            for stem, (path, info, t_prep, faces) in photos.items():
                entry = _photo_entry(path, stem, faces, info, t_prep)
                write_record(out, stem, entry)
                faces_done += entry.get("faces_reconstructed", 0)
            write_summary(out, paths, stems, time.time() - started, ignored or [])
            progress.update(min(start + FLAGS.batch_size, len(todo)), faces_done)
    return write_summary(out, paths, stems, time.time() - started, ignored or [])


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.photo_job import ignored_inputs, list_inputs, parse_shard

    if not FLAGS.input:
        raise app.UsageError("--input is required (a photo, a folder or a list file)")
    try:
        parse_shard(FLAGS.shard)
        paths = list_inputs(FLAGS.input)
    except (ValueError, FileNotFoundError) as err:
        raise app.UsageError(str(err)) from err
    ignored = ignored_inputs(FLAGS.input)
    if not paths:
        raise app.UsageError(f"no images found in {FLAGS.input}" + (
            f" ({len(ignored)} files without an image extension, e.g. "
            f"{os.path.basename(ignored[0])})" if ignored else ""))
    summary = run(paths, FLAGS.output, ignored)
    t = summary["totals"]
    ignored_note = f", {t['ignored']} other files ignored" if t["ignored"] else ""
    print(f"reconstructed {t['faces']} faces in {t['ok']} of {t['inputs']} images into "
          f"{FLAGS.output} ({t['skipped']} skipped, {t['pending']} pending in other shards"
          f"{ignored_note}; "
          f"see {os.path.join(FLAGS.output, 'summary.json')} and "
          f"{os.path.join(FLAGS.output, 'index.html')})")


if __name__ == "__main__":
    app.run(main)
