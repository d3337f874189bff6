"""Table 4 and Fig. 11: scan-to-mesh errors (mm) on the NoW validation set.

    python experiments/table4_now.py --data_root=/data/NoW_Dataset         # the paper's data
    python experiments/table4_now.py --data_root=/data/NoW_Dataset \\
        --coarse_model=runs/coarse                                          # + R-Net rows
    python experiments/table4_now.py --limit=2                              # default data

Protocol:

* **Data.** NoW's ``iphone_pictures/`` + ``imagepaths<split>.txt`` with the subjects'
  ``scans/`` and ``scans_lmks_onlypp/`` (:func:`recon_tf.data.readers.read_now`),
  split ``--split`` (default ``validation``, as the paper), ``--limit=N`` keeps the
  first N listed images. The ``test`` split has no public scans: predictions are
  written for NoW's server and nothing is scored. Without ``--data_root``: the default
  data, ``--num_synthetic`` held-out synthetic faces (seed ``--synthetic_seed``, with
  expressions) written in NoW's layout under ``<output>/default_data``, each with its
  true *neutral* mesh (mm) as the scan and that mesh's 7 landmarks as the ``.pp`` file,
  read by the same NoW reader (NOT NoW); the mean face is scored as a baseline row.
  ``--out_of_model_mm=X`` gives every synthetic face (image and scan) X mm RMS of smooth
  shape not drawn from the face model, about half of it outside its identity basis: a
  stand-in for scans of faces from another face model.
* **Crop.** Each image's face is detected (MTCNN), landmarked (PFLD) and aligned to a
  224² crop (``--image_size``) by Deep3DFace's 5-point scheme. Which face: the one on
  NoW's own box (``detected_face/<image path>.npy``, as DECA and RingNet crop; the
  detection overlapping it most, IoU ≥ 0.3, else the box itself, re-framed by FaceMesh
  where FaceMesh finds a face in it: :meth:`recon_tf.photo_faces.FacePreparer.prepare`);
  without those files, the largest detected face. The paper
  crops NoW images to 256×256 with [22]'s method; our crop is the same alignment at our
  network's input size.
* **Scored mesh.** The NEUTRAL-expression coarse mesh (identity only, expression 0, in
  mm), as NoW's scans are neutral; the fine stage's displacement is not part of it. Its
  eye and mouth openings are closed (``--cap_holes``, as ``mesh_neutral.obj``): a scan is
  closed there, and an open mesh would be scored against the openings' rims.
* **Metric.** :func:`recon_tf.now_eval.evaluate_scan`: NoW's crop of the scan (a sphere
  around the nose), a similarity from the 7 landmarks, rigid + scale refinement of the
  scan-to-mesh distance (``--now_iterations``), then the distance of every cropped scan
  vertex to the aligned mesh; :func:`recon_tf.now_eval.summarize` pools all points of
  all images (median, mean, std in mm, as NoW's ``cumulative_errors.py``).
* **Detection failures.** With NoW's boxes a face MTCNN misses is none (the box stands
  in). Without them, an image without a detected face is counted, gets no
  prediction, is excluded from every method's errors (NoW's own scripts would require
  a mesh for every listed image) and is listed under the table and in
  ``<output>/table4_failures.txt``.
* **Methods.** Per-photo fitting (always), a trained R-Net (``--coarse_model``; omitted
  with a note otherwise), and the mean face (the same mesh for every image).

Writes ``<output>/table4.md`` and ``table4.csv`` (our rows beside the paper's,
:data:`PAPER_TABLE4`), ``table4_per_image.csv``, ``table4_failures.txt``, the cumulative
error curve ``table4_cumulative_errors.png`` (Fig. 11) and the predictions in NoW's
submission layout, ``<output>/predictions/<subject>/<experiment>/<image>.obj`` + ``.npy``
(7×3 landmarks, mm, NoW order) for fitting (``predictions_rnet/`` for R-Net), so that
NoW's official scripts can score them too; prints the Markdown.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tables  # noqa: E402  (experiments/_tables.py: what the table scripts share)

FLAGS = flags.FLAGS
flags.DEFINE_bool("cap_holes", True, "Score the neutral mesh with its eye and mouth openings "
                  "closed (recon_tf.mesh.cap_holes), as the main job's mesh_neutral.obj; "
                  "False scores the open mesh (for study).")
flags.DEFINE_integer("now_iterations", 50, "Rigid (+ scale) refinement iterations of the NoW "
                     "alignment (0: landmark similarity only).")

# Table 4 of the paper (NoW validation): method, median, mean, std (mm).
PAPER_TABLE4 = (
    ("Facescape [18]", 3.92, 11.04, 16.80),
    ("3DDFA_V2 [42]", 3.60, 10.36, 16.25),
    ("RingNet [41]", 1.36, 1.71, 1.44),
    ("Deep3DFace [22]", 1.29, 1.87, 2.38),
    ("MGCNet [43]", 1.43, 1.99, 2.42),
    ("Tran et al. [38]", 1.48, 2.07, 2.47),
    ("Chen et al. [25]", 1.21, 1.53, 1.35),
    ("DECA [23]", 1.22, 1.55, 1.34),
    ("EMOCA [24]", 1.26, 1.55, 1.31),
    ("Ours", 1.19, 1.50, 1.30),
)
COLUMNS = (("median", "Median (mm) ↓", ".3f"), ("mean", "Mean (mm) ↓", ".3f"),
           ("std", "Std (mm) ↓", ".3f"))
SPEC = _tables.TableSpec(
    4, "Reconstruction errors on the NoW benchmark (paper's Table 4)", COLUMNS,
    _tables.paper_rows(PAPER_TABLE4, ("median", "mean", "std")),
    "NoW validation set, 256×256 crops by [22]'s method")
CURVE = "table4_cumulative_errors.png"


class Scans:
    """The subjects' scans and 7 scan landmarks, read once per subject."""

    def __init__(self):
        self._cache: dict[str, tuple | None] = {}

    def get(self, record) -> tuple | None:
        """(scan vertices [S, 3] mm, landmarks [7, 3]) of a record, or None (no scan)."""
        from recon_tf.now_eval import read_obj_vertices_faces, read_pp_landmarks

        if record.subject not in self._cache:
            scan, pp = record.extra.get("scan_path"), record.extra.get("scan_landmarks_path")
            self._cache[record.subject] = (
                (read_obj_vertices_faces(scan)[0], read_pp_landmarks(pp))
                if scan and pp else None)
        return self._cache[record.subject]


def write_prediction(root: str, record, verts_mm: np.ndarray, triangles: np.ndarray,
                     now_ids: np.ndarray) -> str:
    """``<root>/<subject>/<experiment>/<image>.obj`` + ``.npy`` (7×3 landmarks, mm);
    with ``--cap_holes`` the mesh's openings closed (vertices appended, ids kept)."""
    from recon_tf.export import write_obj
    from recon_tf.mesh import cap_holes

    stem = os.path.splitext(os.path.basename(record.image_path))[0]
    folder = os.path.join(root, record.subject, record.extra.get("expression") or "images")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, stem + ".obj")
    np.save(os.path.join(folder, stem + ".npy"), verts_mm[now_ids].astype(np.float64))
    if FLAGS.cap_holes:
        verts_mm, triangles = cap_holes(verts_mm, triangles)[:2]
    write_obj(path, verts_mm, triangles)
    return path


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.mesh import cap_holes
    from recon_tf.now_eval import (
        cumulative_error_curve,
        evaluate_scan,
        read_now_prediction,
        summarize,
    )
    from recon_tf.photo_faces import BOX_STOOD_IN

    out = FLAGS.output
    FLAGS.fine = False  # NoW scores the neutral coarse mesh
    data = _tables.select_data("now", out)
    sources, notes = _tables.build_sources()
    fm = sources[0].recon.face_model
    tris = np.asarray(fm.arrays["triangles"])
    now_ids = _tables.now_vertex_ids(fm)
    mean = np.asarray(fm.arrays["mean_shape"], np.float64) * 100.0
    mean_mesh = cap_holes(mean, tris)[:2] if FLAGS.cap_holes else (mean, tris)
    labels = {**{s.key: f"Ours: {s.label} (neutral mesh)" for s in sources},
              "mean": "Mean face (baseline)"}
    errors: dict[str, list[np.ndarray]] = {k: [] for k in labels}
    scans, failures, per_image, unscored = Scans(), [], [], 0
    mean_errors: dict[str, np.ndarray] = {}  # the mean face's errors depend on the subject only

    def score(key: str, record, verts, faces, lmk) -> None:
        if key == "mean" and record.subject in mean_errors:
            err = mean_errors[record.subject]
        else:
            scan, scan_lmk = scans.get(record)
            err = evaluate_scan(verts, faces, lmk, scan, None, scan_lmk,
                                iterations=FLAGS.now_iterations)
            if key == "mean":
                mean_errors[record.subject] = err
        errors[key].append(err)
        per_image.append({"image": os.path.relpath(record.image_path, data.root),
                          "method": key, **summarize(err), "points": err.size})

    from_box = []  # faces MTCNN missed that NoW's box stood in for
    for batch in _tables.prepared_batches(sources[0].recon, data, failures, "table4"):
        faces = [face for _, face in batch]
        from_box += [face.info["note"] for face in faces
                     if face.info.get("note", "").startswith(BOX_STOOD_IN)]
        for src in sources:
            meshes = _tables.neutral_meshes_mm(fm, src.recon.fit(faces).coeffs)
            root = os.path.join(out, "predictions" + ("" if src.key == "fit" else f"_{src.key}"))
            for (record, _), verts in zip(batch, meshes):
                path = write_prediction(root, record, verts, tris, now_ids)
                if scans.get(record) is not None:
                    score(src.key, record, *read_now_prediction(path))
        for record, _ in batch:
            if scans.get(record) is None:
                unscored += 1
            else:
                score("mean", record, *mean_mesh, mean[now_ids])
    ours = [{"method": labels[k], **summarize(errors[k]), "images": len(errors[k])}
            for k in labels]
    if from_box:
        framed = sum("FaceMesh" in note for note in from_box)
        notes.append(f"{len(from_box)} images had no detection on NoW's face box: the box "
                     f"stood in ({framed} re-framed by FaceMesh).")
    if unscored:
        notes.append(f"{unscored} images have no scan (e.g. NoW's test split): their "
                     "predictions are written but not scored.")
    where = "default data, not NoW" if data.default else f"NoW {FLAGS.split or 'validation'}"
    cumulative_error_curve({labels[k]: v for k, v in errors.items() if v},
                           os.path.join(out, CURVE), title=f"Cumulative errors (Fig. 11), {where}")
    boxed = sum(r.face_box is not None for r in data.records)
    header = ["Region: NoW's crop of each scan (vertices within a sphere around the nose); "
              "7-landmark similarity, then rigid + scale refinement of the scan-to-mesh "
              f"distance ({FLAGS.now_iterations} iterations); errors pooled over all points "
              "of all images.",
              "Scored mesh: the NEUTRAL-expression coarse mesh (identity only), mm, "
              + ("its eye and mouth openings closed (`--cap_holes`)." if FLAGS.cap_holes
                 else "open at the eyes and mouth (`--cap_holes=false`)."),
              _tables.crop_line(renders=False) + " The paper: 256×256 crops by [22]'s method."
              + (f" The face on NoW's own box (`detected_face`) for {boxed} of the images."
                 if boxed else ""),
              f"Cumulative error curve (Fig. 11): `{CURVE}`; predictions in NoW's submission "
              "layout: `predictions/<subject>/<experiment>/<image>.obj` + `.npy` (7×3, mm)."]
    _tables.write_table(SPEC, ours, data, header, notes, failures, out, per_image)


if __name__ == "__main__":
    FLAGS.set_default("output", "outputs/table4")
    app.run(main)
