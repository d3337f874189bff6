"""Calibrate the vertices that ``landmarks68.txt`` reports for points 17–67.

    python tools/reconstruct.py --input=../shared/assets/images/faces \\
        --output=outputs/faces --fine=false
    python tools/calibrate_landmarks.py --fits=outputs/faces

The fit pulls the face model's ``lmk68`` vertices towards the detector's points
only as far as the photometric term and the priors let it, and a model's vertex
for a point is not always where iBUG/300W annotators mark it. This tool reads a
main-job output folder (every ``coeffs.npz`` with its ``mesh_coarse.obj``;
``coeffs.npz`` holds the detector's points as ``detected_landmarks68``),
projects every vertex of each fitted face onto its photo, and re-chooses each
point's vertex near its ``lmk68`` vertex so that its projection lands on the
detector's point on average
(:func:`recon_tf.landmarks.calibrate_output_landmarks`; left–right pairs
together, so the table is symmetric).

A group of points (brows, nose, eyes, mouth) is re-chosen only if that lowers
the fit–detector distance on photos it was not learned from: 2-fold
cross-validation by photo, ``--cv_repeats`` random splits. The tool prints the
held-out distances per group and the table, and writes it as JSON with
``--output``; ``--model_output`` writes a copy of the face model with the table
as its ``lmk68_output`` (e.g. for a converted BFM, whose file has none). The
ICT-FaceKit table in ``bfm/ict.py`` (:data:`bfm.ict.ICT_OUTPUT_LANDMARKS`) was
made this way (README, "Output landmarks"). The fit itself is unchanged by the
table: only what ``landmarks68.txt`` reports.
"""

from __future__ import annotations

import json

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("fits", "outputs/faces",
                    "Output folder of tools/reconstruct.py (any number of photos and faces).")
flags.DEFINE_string("face_model", None, "recon_tf face-model .npz the fits used (default: "
                    "ICT-FaceKit, bfm.load_default_face_model()).")
flags.DEFINE_float("radius_mm", 6.0, "Search radius around each point's lmk68 vertex on the "
                   "mean shape, millimetres.")
flags.DEFINE_list("groups", ["brows", "nose", "eyes", "mouth"],
                  "Groups that may be re-chosen (recon_tf.landmarks.LANDMARK_GROUPS).")
flags.DEFINE_integer("cv_repeats", 5, "Random 2-fold splits by photo for the group test.")
flags.DEFINE_integer("seed", 0, "Seed of the splits.")
flags.DEFINE_string("output", None, "Write the chosen ids (JSON) here.")
flags.DEFINE_string("model_output", None, "Write the face model (--face_model or the default) "
                    "with lmk68_output set to the chosen ids here, for "
                    "tools/reconstruct.py --face_model=<it>.")
flags.DEFINE_string("assets_dir", None,
                    "Assets root (default: $RECON_TF_ASSETS or ../shared/assets).")

def cross_validate(screens: np.ndarray, detected: np.ndarray, photos: list[str], calibrate,
                   lmk68: np.ndarray, groups: dict, repeats: int, seed: int) -> dict:
    """Held-out fit–detector distance per group, before and after calibrating on
    the other half of the photos. Returns {group: (before, after)}."""
    from recon_tf.landmarks import detector_distance

    names = sorted(set(photos))
    if len(names) < 2:
        raise ValueError("cross-validation needs fits of at least 2 photos")
    photo = np.asarray(photos)
    rng = np.random.default_rng(seed)
    sums = {g: np.zeros(2) for g in groups}
    for _ in range(repeats):
        half = set(rng.permutation(names)[:len(names) // 2])
        first = np.array([p in half for p in photo])
        for train, test in ((first, ~first), (~first, first)):
            ids = calibrate(screens[train], detected[train])
            for g, pts in groups.items():
                sums[g] += (detector_distance(screens[test], detected[test], lmk68, pts),
                            detector_distance(screens[test], detected[test], ids, pts))
    return {g: tuple(s / (2 * repeats)) for g, s in sums.items()}


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.assets import set_assets_dir
    from recon_tf.landmarks import LANDMARK_GROUPS, calibrate_output_landmarks, detector_distance
    from recon_tf.reconstruction import DM_TO_MM, read_fitted_faces

    if FLAGS.assets_dir:
        set_assets_dir(FLAGS.assets_dir)
    unknown = set(FLAGS.groups) - set(LANDMARK_GROUPS)
    if unknown:
        raise app.UsageError(f"unknown --groups {sorted(unknown)}; "
                             f"choose from {sorted(LANDMARK_GROUPS)}")
    if FLAGS.face_model:
        from recon_tf.face_model import load_face_model

        face_model = load_face_model(FLAGS.face_model)
    else:
        from bfm import load_default_face_model

        face_model = load_default_face_model()
    mean_mm = np.asarray(face_model.arrays["mean_shape"]) * DM_TO_MM
    lmk68 = np.asarray(face_model.arrays["lmk68"], np.int32)
    allowed = face_model.front_mask.numpy() > 0.5
    screens, detected, photos = read_fitted_faces(FLAGS.fits)
    logging.info("%d faces of %d photos", len(photos), len(set(photos)))
    groups = {g: LANDMARK_GROUPS[g] for g in FLAGS.groups}
    everything = tuple(p for pts in groups.values() for p in pts)

    def calibrate(s, d, points=everything):
        return calibrate_output_landmarks(s, d, mean_mm, lmk68, allowed, points,
                                          FLAGS.radius_mm)

    cv = cross_validate(screens, detected, photos, calibrate, lmk68, groups,
                        FLAGS.cv_repeats, FLAGS.seed)
    kept = [g for g in groups if cv[g][1] < cv[g][0]]
    ids = calibrate(screens, detected, tuple(p for g in kept for p in groups[g]))
    print("| group | held-out fit–detector % before | after | re-chosen |")
    print("|---|---|---|---|")
    for g, (before, after) in cv.items():
        print(f"| {g} | {before:.2f} | {after:.2f} | {'yes' if g in kept else 'no'} |")
    inner = tuple(range(17, 68))
    print(f"all faces, points 17–67: {detector_distance(screens, detected, lmk68, inner):.2f}"
          f" → {detector_distance(screens, detected, ids, inner):.2f} %")
    print("lmk68_output[17:] =", ids[17:].tolist())
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump({"lmk68_output": ids.tolist(), "groups": kept,
                       "cross_validation": cv, "faces": len(photos),
                       "photos": len(set(photos)), "radius_mm": FLAGS.radius_mm}, f, indent=1)
    if FLAGS.model_output:
        from recon_tf.face_model import save_face_model

        save_face_model(FLAGS.model_output, dict(face_model.arrays, lmk68_output=ids))
        logging.info("wrote %s", FLAGS.model_output)


if __name__ == "__main__":
    app.run(main)
