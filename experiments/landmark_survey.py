"""How the 2D landmark front end (detector + 68-point landmarker) holds up on photos in
the wild: detection and NME on altered copies of annotated photos.

    python experiments/landmark_survey.py
    python experiments/landmark_survey.py --photos_dir=/data/300W/01_Indoor --limit=50

Protocol:

* Photos: every image under ``--photos_dir`` (recursive) with a 68-point annotation of
  the same stem (``.pts``, ``.mat`` or ``.t7``, read as LS3D-W's reader does:
  :func:`recon_tf.data.readers.read_ls3dw`; default: the three ``images/faces_68pts``
  photos of the assets), at most ``--limit``.
* Variants (``--variants``; :func:`recon_tf.data.photo_variants.photo_variant`), each
  applied to the photo and to its ground truth: ``orig``; ``scale0.5`` / ``scale0.25``
  (small, blurry faces); ``rot25`` / ``rot45`` (tilted heads); ``flip``; ``gray``;
  ``dark`` (underexposed); ``tinyface`` (a face far from the camera); ``tight`` (a face
  crop to its landmarks' bounding box); ``cuteyes`` / ``cuthalf`` (cut by the photo's
  edge); ``rot180``, ``blur``, ``noise``, ``jpeg5``, ``bright``, ``mask``,
  ``sunglasses`` (the module docstring of :mod:`recon_tf.data.photo_variants`).
* Each variant goes through the main job's front end (MTCNN + FaceMesh's second opinion,
  then the landmarker, read again turned by 180° where FaceMesh finds the face upside
  down, or searched turned when FaceMesh finds no face among those found upright:
  :func:`recon_tf.photo_faces.read_upside_down`, ``turned_instead``), with the
  annotated face selected as in ``fit_eval.py``: the detected box holding most
  ground-truth points; when no box holds half of them the face counts as **missed**
  and the annotation's bounding box stands in (its NME is still reported, marked
  ``*``).
* NME: mean point error / outer-eye-corner distance (iBUG 36–45), %, of the
  landmarker's own 68 points (not a fit).

Prints a Markdown table (variant × photo, then the mean) and writes it to
``--output/landmark_survey.md``.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
from absl import app, flags, logging

from recon_tf.data.photo_variants import VARIANTS, photo_variant
from recon_tf.data.readers import DatasetNotFoundError, Record, read_ls3dw

FLAGS = flags.FLAGS
flags.DEFINE_string("photos_dir", "", "Folder of photos with .pts/.mat/.t7/.ljson beside them "
                    "(default: <assets>/images/faces_68pts).")
flags.DEFINE_integer("limit", 0, "At most this many photos (0: all).")
flags.DEFINE_list("variants", list(VARIANTS), "Variants to survey.")
flags.DEFINE_enum("landmarker", "pfld", ["pfld", "dlib", "fan"], "68-point landmarker.")
flags.DEFINE_boolean("level", True, "PFLD: eye-levelled crops (recon_tf.preprocess.landmarks).")
flags.DEFINE_integer("refine_passes", 2, "PFLD: refined passes after the box pass.")
flags.DEFINE_boolean("verify_faces", True, "FaceMesh's second opinion on unsure detections "
                     "(and on the faces found only in the mirrored photo).")
flags.DEFINE_boolean("mirror_detection", True, "With --verify_faces: search the mirrored "
                     "photo too (tools/reconstruct.py's flag).")
flags.DEFINE_list("rotated_detection", ["45", "-45", "90", "-90", "180"], "With --verify_faces: "
                  "angles (degrees) searched when no face is found upright; empty: off.")
flags.DEFINE_bool("frame_faces", True, "With --verify_faces: the frame-filling face check "
                  "(tools/reconstruct.py's flag).")
flags.DEFINE_string("output", "outputs/landmark_survey", "Where the table is written.")


def survey(preprocessor, photos: list[Record], variants: list[str], facemesh=None) -> dict:
    """{variant: [(photo name, NME %, detected)]} (module docstring)."""
    from recon_tf.photo_faces import read_upside_down, turned_instead
    from recon_tf.preprocess import select_face
    from recon_tf.preprocess.image_io import load_image
    from recon_tf.preprocess.landmarks import eye_roll, nme_outer_eyes

    results = {v: [] for v in variants}
    for record in photos:
        path = record.image_path
        image, truth = load_image(path).pixels, record.landmarks
        for variant in variants:
            pixels, gt = photo_variant(variant, image, truth)
            faces = preprocessor.detector.detect(pixels)
            if faces and facemesh is not None:
                faces = turned_instead(preprocessor.detector, facemesh,
                                       preprocessor.landmarker, pixels, faces)
            face, note = select_face(faces, gt)
            points = preprocessor.landmarker(pixels, face.box, face.keypoints)
            if facemesh is not None:
                score = facemesh.detect(pixels, face.box, angle=eye_roll(face.keypoints))[1]
                turned = read_upside_down(facemesh, preprocessor.landmarker, pixels, face,
                                          score)
                points = points if turned is None else turned[0]
            detected = "annotation's bounding box" not in note
            nme = 100.0 * nme_outer_eyes(points, gt)
            results[variant].append((os.path.basename(path), nme, detected))
            logging.info("%s %s: NME %.2f %%%s", os.path.basename(path), variant, nme,
                         "" if detected else " (missed)")
    return results


def markdown(results: dict) -> str:
    """The survey as a Markdown table: variant × photo NME (%), mean, detections."""
    variants = list(results)
    names = [n for n, *_ in results[variants[0]]]
    lines = ["| variant | " + " | ".join(names) + " | mean | detected |",
             "|---" * (len(names) + 3) + "|"]
    everything = []
    for v in variants:
        cells = [f"{nme:.2f}" + ("" if ok else "*") for _, nme, ok in results[v]]
        values = [nme for _, nme, _ in results[v]]
        everything += values
        hits = sum(ok for *_, ok in results[v])
        lines.append(f"| {v} | " + " | ".join(cells)
                     + f" | {np.mean(values):.2f} | {hits}/{len(values)} |")
    lines.append("| **all** | " + " | ".join("" for _ in names)
                 + f" | **{np.mean(everything):.2f}** | |")
    return "\n".join(lines)


def main(argv):
    del argv
    from bfm import load_default_face_model
    from recon_tf.assets import asset_path
    from recon_tf.preprocess import FacePreprocessor
    from recon_tf.preprocess.landmarks import PFLDLandmarker

    folder = FLAGS.photos_dir or asset_path("images/faces_68pts")
    try:
        photos = list(itertools.islice(read_ls3dw(folder), FLAGS.limit or None))
    except DatasetNotFoundError as err:
        raise app.UsageError(f"{folder}: {err}") from err
    verifier = mesh = None
    if FLAGS.verify_faces:
        from recon_tf.nets.facemesh import FaceMesh

        mesh = FaceMesh()
        verifier = mesh.face_score
    face_model = load_default_face_model()
    preprocessor = FacePreprocessor(landmarker=FLAGS.landmarker,
                                    template_3d=face_model.mean_landmarks_3d(),
                                    face_verifier=verifier,
                                    mirror_pass=verifier is not None and FLAGS.mirror_detection,
                                    rotations=tuple(float(a) for a in FLAGS.rotated_detection)
                                    if verifier is not None else (),
                                    face_framer=mesh.detect
                                    if verifier is not None and FLAGS.frame_faces else None)
    if FLAGS.landmarker == "pfld":
        preprocessor.landmarker = PFLDLandmarker(refine_passes=FLAGS.refine_passes,
                                                 level=FLAGS.level)
    table = markdown(survey(preprocessor, photos, FLAGS.variants, mesh))
    header = (f"NME % of the {FLAGS.landmarker} landmarks (level={FLAGS.level}, "
              f"refine_passes={FLAGS.refine_passes}); * = missed by the detector "
              "(annotation's box used)")
    print(header + "\n\n" + table)
    os.makedirs(FLAGS.output, exist_ok=True)
    with open(os.path.join(FLAGS.output, "landmark_survey.md"), "w") as f:
        f.write(header + "\n\n" + table + "\n")


if __name__ == "__main__":
    app.run(main)
