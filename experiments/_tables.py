"""What the Table 1–5 scripts share: data selection, method runners, metrics, tables.

Each ``experiments/tableN_*.py`` states its protocol in its docstring, holds the
paper's published numbers in a constant and calls into this module:

* **Flags.** ``tools/reconstruct.py`` is imported as a module, so every flag of
  the main job (detector, ``--image_size``, fitting steps, ``--fine``,
  ``--fine_model``, ``--fine_steps``, ``--batch_size``, ``--output`` ...)
  configures the tables too; added here: ``--data_root``, ``--split``,
  ``--limit``, ``--coarse_model``, ``--num_synthetic``, ``--synthetic_seed``,
  ``--save_renders`` and (image tables) ``--region``.
* **Data** (:func:`select_data`): ``--data_root`` in its published layout
  (:func:`recon_tf.data.readers.read_dataset`), or the *default data* (not the
  paper's): the shared photos, the annotated shared photos, or held-out
  synthetic faces written in LFW's or NoW's layout and read by the same reader.
* **Methods** (:func:`build_sources`, :class:`FineVariant`): per-photo fitting
  (always), a trained R-Net (``--coarse_model``), and on each the fine stage by
  trained modules (``--fine_model``) or per-photo fine fitting.
* **Detection failures** (:func:`prepared_batches`): counted, excluded from
  every mean (all methods score the same images), listed in the table and in
  ``<output>/tableN_failures.txt``.
* **Image metrics** (:func:`evaluate_images`): :func:`recon_tf.metrics.image_metrics`
  of the render composited over the decoded photo, per image over
  :func:`recon_tf.metrics.region_mask`, then averaged.
* **Output** (:func:`write_table`): ``tableN.md`` and ``tableN.csv`` (our rows
  beside the paper's), ``tableN_per_image.csv``; the Markdown is printed.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
from absl import app, flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import reconstruct  # noqa: E402  (its flags configure detection, alignment, fitting, fine)

from recon_tf.metrics import (  # noqa: E402
    REGIONS,
    average_metrics,
    describe_region,
    image_metrics,
    landmark_hull_mask,
    region_mask,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_root", None, "Root of the data set in its published layout (see the "
                    "script's docstring). Default: the default data, which is NOT the paper's.")
flags.DEFINE_string("split", None, "Split: CelebA train/val/test/all (default test), NoW "
                    "validation/test (default validation); LFW and LS3D-W have none.")
flags.DEFINE_integer("limit", 0, "Evaluate only the first N images of the data set (0: all).")
flags.DEFINE_string("coarse_model", None, "A trained R-Net (experiments/train_coarse.py run "
                    "directory, checkpoint or SavedModel): adds its rows. Without it only the "
                    "fitting rows (the R-Net rows are omitted with a note).")
flags.DEFINE_integer("num_synthetic", 8, "Held-out synthetic faces in the default data "
                     "(Tables 3 and 4).")
flags.DEFINE_integer("synthetic_seed", 1001, "Seed of the default data's synthetic faces "
                     "(the training sets use seeds 0 and 1000).")
flags.DEFINE_float("out_of_model_mm", 0.0, "Default data of Tables 3 and 4: give each "
                   "synthetic face a smooth shape deformation not drawn from the face model "
                   "(about half outside its identity basis), of this RMS over the front face "
                   "(mm; 0: none): a stand-in for scans of another face model "
                   "(recon_tf.data.synthetic.out_of_model_offset).")
flags.DEFINE_integer("save_renders", 8, "Save the renders of the first N scored images under "
                     "<output>/renders (0: none).")

DEFAULT_WARNING = ("**Not the paper's data.** No data set was given (`--data_root`), so this "
                   "ran on the project's default data to show the whole path working; the "
                   "numbers are not comparable with the paper's rows.")
READER_NAMES = {"celeba": "CelebA", "lfw": "LFW", "ls3d": "LS3D-W", "now": "NoW"}
IMAGE_COLUMNS = (("psnr", "PSNR ↑", ".3f"), ("ssim", "SSIM ↑", ".3f"), ("rmse", "RMSE ↓", ".3f"))
CROP = ("each detected face (MTCNN, 68 points by PFLD) aligned by Deep3DFace's 5-point "
        "scheme to a {size}² crop (`--image_size`), as the paper's coarse stage")
MAX_LISTED_FAILURES = 20
# Written into a synthetic layout's COMPLETE marker; a set written by an older version
# (other content) is written again.
LAYOUT_VERSION = ("3: NoW scans are the front face with closed eye and mouth openings; "
                  "detected_face boxes\n")
PROGRESS_EVERY_S = 10.0


def define_region_flag() -> None:
    """``--region`` (image tables only)."""
    flags.DEFINE_enum("region", "face", list(REGIONS), "Pixels the image metrics use: face = "
                      "the rendered face (∩ the annotated landmark hull when the data has "
                      "landmarks), composite = the whole image with the render over the photo.")


# --------------------------------------------------------------------------- data


@dataclasses.dataclass
class Data:
    """The ``records`` (:class:`recon_tf.data.readers.Record`, ``--limit`` applied) a
    table evaluates, a one-line ``label``, ``default`` (True: the default data, not
    the paper's) and the ``root`` record ids are relative to."""

    records: list
    label: str
    default: bool
    root: str


def default_face_model():
    """The face model the flags name (``--face_model``, default ICT-FaceKit)."""
    from bfm import load_default_face_model
    from recon_tf.face_model import load_face_model

    return load_face_model(FLAGS.face_model) if FLAGS.face_model else load_default_face_model()


def select_data(reader: str, out_dir: str) -> Data:
    """The ``--data_root`` data set (``reader``: celeba, lfw, ls3d or now), or the default data.

    Default data (NOT the paper's): celeba → the shared photos
    ``<assets>/images/faces`` (folder reader); ls3d → the 3 photos with
    ground-truth ``.pts`` in ``<assets>/images/faces_68pts`` (LS3D-W reader);
    lfw / now → ``--num_synthetic`` held-out synthetic faces written in LFW's /
    NoW's layout under ``<output>/default_data`` and read by the same reader.
    """
    from recon_tf import assets
    from recon_tf.data.readers import read_dataset

    if FLAGS.assets_dir:
        assets.set_assets_dir(FLAGS.assets_dir)
    if FLAGS.data_root:
        root = FLAGS.data_root
        try:
            records = read_dataset(reader, root, FLAGS.split)
        except (FileNotFoundError, ValueError) as err:
            raise app.UsageError(str(err)) from err
        split = {"celeba": "test", "now": "validation"}.get(reader)
        split = f" {FLAGS.split or split} split" if split else ""
        label = f"{READER_NAMES[reader]}{split} at `{root}`"
    elif reader == "celeba":
        root = assets.asset_path("images/faces")
        records = read_dataset("folder", root)
        label = f"default data: the shared photos in `{root}` (NOT CelebA)"
    elif reader == "ls3d":
        root = assets.asset_path("images/faces_68pts")
        records = read_dataset("ls3d", root)
        label = (f"default data: the shared photos with ground-truth 68-point `.pts` in "
                 f"`{root}`, read by the LS3D-W reader (NOT LS3D-W)")
    else:
        root = write_synthetic_layout(reader, default_face_model(),
                                      os.path.join(out_dir, "default_data"))
        records = read_dataset(reader, root, "validation" if reader == "now" else None)
        extra = (f", plus {FLAGS.out_of_model_mm:g} mm RMS of smooth shape not drawn from the "
                 f"model, about half of it outside its identity basis"
                 if FLAGS.out_of_model_mm > 0 else "")
        label = (f"default data: held-out synthetic faces (seed {FLAGS.synthetic_seed}, known "
                 f"geometry{extra}) in {READER_NAMES[reader]}'s layout at `{root}` "
                 f"(NOT {READER_NAMES[reader]})")
    total = len(records)
    if FLAGS.limit > 0:
        records = records[:FLAGS.limit]
    label += f"; {len(records)} of its {total} images" + (" (`--limit`)" if FLAGS.limit else "")
    if not records:
        raise app.UsageError(f"no images in {root}")
    return Data(records, label, not FLAGS.data_root, root)


def write_synthetic_layout(layout: str, face_model, parent: str) -> str:
    """Held-out synthetic faces in LFW's (``lfw``) or NoW's (``now``) published layout.

    LFW: ``lfw/<subject>/<subject>_0001.png``. NoW (validation):
    ``iphone_pictures/<subject>/multiview_expressions/IMG_0001.png``,
    ``imagepathsvalidation.txt``, the true *neutral* mesh as the scan
    ``scans/<subject>/<subject>.obj`` (mm; the front face only, :func:`front_face_mesh`,
    as a face scan holds no scalp, back of the head or neck, with its eye and mouth
    openings closed, :func:`recon_tf.mesh.cap_holes`, as a scan is closed there) and
    its 7 NoW landmarks
    ``scans_lmks_onlypp/<subject>/<subject>.pp``, and NoW's face box
    ``detected_face/<subject>/multiview_expressions/IMG_0001.npy``
    (:func:`write_now_face_box`). With ``--out_of_model_mm``
    the faces (images and scans alike) carry that much smooth shape not drawn
    from the model (:func:`recon_tf.data.synthetic.out_of_model_offset`).
    Written once (a marker file ends a complete set).

    Returns:
      the layout's root folder.
    """
    from recon_tf.data.synthetic import SyntheticConfig, SyntheticRenderer
    from recon_tf.export import write_obj
    from recon_tf.mesh import cap_holes
    from recon_tf.now_eval import NOW_LANDMARK_NAMES, write_pp_landmarks

    seed, num = FLAGS.synthetic_seed, FLAGS.num_synthetic
    mm = FLAGS.out_of_model_mm
    root = os.path.join(parent, f"{layout}_{seed}_{num}" + (f"_oom{mm:g}mm" if mm > 0 else ""))
    marker = os.path.join(root, "COMPLETE")
    if os.path.exists(marker):
        with open(marker) as f:
            if f.read() == LAYOUT_VERSION:
                return root
    logging.info("writing %d synthetic faces in %s's layout to %s", num, layout, root)
    fm = face_model
    renderer = SyntheticRenderer(fm, SyntheticConfig(out_of_model=mm / 100.0))
    now_ids = now_vertex_ids(fm)
    keep, front_tris = front_face_mesh(fm)
    listing = []
    for start in range(0, num, 4):
        rendered = renderer.render([renderer.sample(seed, i)
                                    for i in range(start, min(start + 4, num))])
        for i, r in enumerate(rendered, start):
            subject = f"synthetic_{seed}_{i:04d}"
            if layout == "lfw":
                save_image(os.path.join(root, "lfw", subject, f"{subject}_0001.png"), r["image"])
                continue
            rel = f"{subject}/multiview_expressions/IMG_{i:04d}.png"
            save_image(os.path.join(root, "iphone_pictures", rel), r["image"])
            listing.append(rel)
            neutral = neutral_meshes_mm(fm, r["coeffs"][None])[0] + 100.0 * r["shape_offset"]
            for folder in ("scans", "scans_lmks_onlypp"):
                os.makedirs(os.path.join(root, folder, subject), exist_ok=True)
            write_obj(os.path.join(root, "scans", subject, f"{subject}.obj"),
                      *cap_holes(neutral[keep], front_tris)[:2])
            write_pp_landmarks(os.path.join(root, "scans_lmks_onlypp", subject, f"{subject}.pp"),
                               neutral[now_ids], NOW_LANDMARK_NAMES)
            write_now_face_box(os.path.join(root, "detected_face",
                                            os.path.splitext(rel)[0] + ".npy"),
                               r["landmarks"], r["image"].shape[:2])
    if layout == "now":
        with open(os.path.join(root, "imagepathsvalidation.txt"), "w") as f:
            f.write("\n".join(listing) + "\n")
    with open(marker, "w") as f:
        f.write(LAYOUT_VERSION)
    return root


def write_now_face_box(path: str, landmarks: np.ndarray, image_hw: tuple[int, int]) -> None:
    """NoW's ``detected_face`` file for a synthetic image: the pickled dict
    ``{"left", "top", "right", "bottom"}`` (NoW's format), here the bounding box of
    the render's 68 points (pixel edges), clipped to the image."""
    h, w = image_hw
    lo = np.maximum(landmarks.min(axis=0) - 0.5, 0.0)
    hi = np.minimum(landmarks.max(axis=0) + 0.5, [w, h])
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, {"left": float(lo[0]), "top": float(lo[1]), "right": float(hi[0]),
                   "bottom": float(hi[1])}, allow_pickle=True)


def front_face_mesh(face_model) -> tuple[np.ndarray, np.ndarray]:
    """The front face as a mesh of its own: (vertex ids int [M] of the model's
    ``front_mask`` > 0.5, or all vertices without one; triangles int32 [T', 3] whose
    three vertices are kept, re-indexed into those M)."""
    tris = np.asarray(face_model.arrays["triangles"])
    front = face_model.arrays.get("front_mask")
    keep = (np.arange(face_model.num_vertices) if front is None
            else np.flatnonzero(np.asarray(front) > 0.5))
    index = np.full(face_model.num_vertices, -1, np.int64)
    index[keep] = np.arange(len(keep))
    kept = index[tris]
    return keep, kept[(kept >= 0).all(axis=1)].astype(np.int32)


def neutral_meshes_mm(face_model, coeffs: np.ndarray) -> np.ndarray:
    """Neutral-expression meshes (identity only) of coefficients [B, total], mm [B, N, 3]."""
    import tensorflow as tf

    c = face_model.layout.split(tf.constant(np.asarray(coeffs, np.float32)))
    return face_model.shape(c.identity, tf.zeros_like(c.expression)).numpy() * 100.0


def now_vertex_ids(face_model) -> np.ndarray:
    """Vertex ids [7] of NoW's 7 landmarks (NoW order) on the face model."""
    from recon_tf.landmarks import NOW_FROM_IBUG

    return np.asarray(face_model.arrays["lmk68"])[list(NOW_FROM_IBUG)]


def save_image(path: str, image: np.ndarray) -> None:
    """:func:`recon_tf.export.save_png`, creating the folder."""
    from recon_tf.export import save_png

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_png(path, image)


# --------------------------------------------------------------------------- methods


@dataclasses.dataclass
class Source:
    """One way to get coarse coefficients: ``key`` (fit / rnet), ``label``, a
    :class:`recon_tf.reconstruction.PhotoReconstructor`."""

    key: str
    label: str
    recon: object


@dataclasses.dataclass
class FineVariant:
    """One fine stage (:class:`recon_tf.photo_fine.FineSettings`) and its table label.

    ``extra`` holds extra table columns (Table 5's module switches)."""

    key: str
    label: str
    settings: object
    extra: dict = dataclasses.field(default_factory=dict)


def build_sources() -> tuple[list[Source], list[str]]:
    """Fitting (always) and R-Net (``--coarse_model``, or the main job's ``--model``).

    Returns:
      (sources, notes on omitted rows).
    """
    model_path = FLAGS.coarse_model or FLAGS.model
    FLAGS.model = None  # the base reconstructor fits from the mean face
    recon = reconstruct.build_reconstructor()
    sources = [Source("fit", "fitting", recon)]
    if not model_path:
        return sources, ["R-Net rows omitted: no `--coarse_model` given (train one with "
                         "`experiments/train_coarse.py`)."]
    from recon_tf.coarse import load_coarse_model

    try:
        predictor, meta = load_coarse_model(model_path, recon.face_model, FLAGS.camera)
    except (FileNotFoundError, ValueError) as err:
        raise app.UsageError(str(err)) from err
    if meta["rnet"]["image_size"] != FLAGS.image_size:
        raise app.UsageError(f"{model_path} takes {meta['rnet']['image_size']}² crops; pass "
                             f"--image_size={meta['rnet']['image_size']}")
    rnet = copy.copy(recon)
    rnet.predictor, rnet.refine_steps = predictor, FLAGS.refine_steps
    label = "R-Net" + (f" + {FLAGS.refine_steps} refinement steps" if FLAGS.refine_steps else "")
    return sources + [Source("rnet", label, rnet)], []


def flag_fine_variants(recon) -> tuple[list[FineVariant], list[str]]:
    """The fine stage the main job's flags describe (trained modules with
    ``--fine_model``, else per-photo fine fitting), or none with ``--fine=false``."""
    if recon.fine is None:
        return [], ["Fine-grained rows omitted: `--fine=false`."]
    how = (f"trained fine modules `{FLAGS.fine_model}`" if FLAGS.fine_model
           else f"per-photo fine fitting, {FLAGS.fine_steps} steps")
    notes = [] if FLAGS.fine_model else [
        "Fine-grained rows use per-photo fine fitting: no `--fine_model` given (train the "
        "modules with `experiments/train_fine.py`)."]
    return [FineVariant("fine", how, recon.fine)], notes


def prepared_batches(recon, data: Data, failures: list[dict], name: str
                     ) -> Iterator[list[tuple]]:
    """Detect and align the records in batches of ``--batch_size``.

    Yields lists of (record, :class:`recon_tf.photo_faces.PreparedFace`);
    annotated records pick their annotated face, records with a face box (NoW's
    ``detected_face``) the face on it. Records that yield no face
    are appended to ``failures`` (``{"image", "reason", "note"}``) and never
    reach any method.
    """
    total, began = len(data.records), time.time()
    last = began
    for start in range(0, total, FLAGS.batch_size):
        batch = []
        for record in data.records[start:start + FLAGS.batch_size]:
            face = recon.prepare(record.image_path, annotation=record.landmarks,
                                 box=record.face_box)
            if hasattr(face, "reason"):
                logging.warning("detection failure %s: %s (%s)", record.image_path,
                                face.reason, face.note)
                failures.append({"image": os.path.relpath(record.image_path, data.root),
                                 "reason": face.reason, "note": face.note})
            else:
                batch.append((record, face))
        if batch:
            yield batch
        done = min(start + FLAGS.batch_size, total)
        if time.time() - last >= PROGRESS_EVERY_S or done == total:
            last = time.time()
            rate = done / max(last - began, 1e-9)
            logging.info("%s: %d/%d images, %d detection failures, %.2f images/s, ETA %s",
                         name, done, total, len(failures), rate,
                         time.strftime("%H:%M:%S", time.gmtime((total - done) / rate)))


# --------------------------------------------------------------------------- image metrics


def _score(face, record, render: np.ndarray, mask: np.ndarray, region: str) -> dict:
    """Image metrics of a composite render (uint8, decoded-photo size) of one face."""
    from recon_tf.preprocess.align import apply_transform, invert

    hull = None
    if record.landmarks is not None and region == "face":
        points = apply_transform(invert(face.to_original), np.asarray(record.landmarks))
        hull = landmark_hull_mask(points, mask.shape)
    return image_metrics(face.pixels, render, region_mask(region, mask, hull))


def _fine_render(recon, face, coeffs: np.ndarray, outputs, index: int) -> np.ndarray:
    """The fine render over the photo (``write_fine``'s ``render_fine.png``), uint8 at
    the decoded photo's size."""
    import cv2

    from recon_tf.photo_fine import write_fine

    with tempfile.TemporaryDirectory() as tmp:
        write_fine(recon, face, coeffs, outputs, index, tmp)
        render = cv2.imread(os.path.join(tmp, "render_fine.png"), cv2.IMREAD_COLOR)[..., ::-1]
    h, w = face.pixels.shape[:2]
    if render.shape[:2] != (h, w):
        render = cv2.resize(render, (w, h), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(render)


def evaluate_images(data: Data, sources: Sequence[Source], fines: Sequence[FineVariant],
                    region: str, out_dir: str, name: str
                    ) -> tuple[dict[str, list[dict]], list[dict], list[dict]]:
    """Image metrics of every method on every detected face.

    Methods are ``<source>/coarse`` and ``<source>/<fine variant>``; all score
    the same images (those with a detected face).

    Returns:
      (method key → per-image metric dicts, per-image CSV rows, failures).
    """
    from recon_tf.photo_fine import fine_details

    scores: dict[str, list[dict]] = {}
    per_image, failures, saved = [], [], 0
    for batch in prepared_batches(sources[0].recon, data, failures, name):
        faces = [face for _, face in batch]
        renders: dict[str, list[np.ndarray]] = {}
        for src in sources:
            coeffs = src.recon.fit(faces).coeffs
            coarse = [src.recon.render_on_photo(face, coeffs[i])[:2]
                      for i, face in enumerate(faces)]
            masks = [m for _, m in coarse]
            renders[f"{src.key}/coarse"] = [c for c, _ in coarse]
            for fv in fines:
                recon = copy.copy(src.recon)
                recon.fine = fv.settings
                outputs, _ = fine_details(recon, faces, coeffs)
                renders[f"{src.key}/{fv.key}"] = [_fine_render(recon, face, coeffs[i],
                                                               outputs, i)
                                                  for i, face in enumerate(faces)]
            for method in [k for k in renders if k.startswith(src.key + "/")]:
                for i, (record, face) in enumerate(batch):
                    metrics = _score(face, record, renders[method][i], masks[i], region)
                    scores.setdefault(method, []).append(metrics)
                    per_image.append({"image": os.path.relpath(record.image_path, data.root),
                                      "method": method, **metrics})
        for i, (record, face) in enumerate(batch):
            if saved >= FLAGS.save_renders:
                break
            saved += 1
            rel = os.path.splitext(os.path.relpath(record.image_path, data.root))[0]
            base = os.path.join(out_dir, "renders", rel.replace(os.sep, "__"))
            save_image(base + "_photo.png", face.pixels)
            for method, images in renders.items():
                save_image(f"{base}_{method.replace('/', '_')}.png", images[i])
    return scores, per_image, failures


def image_rows(scores: dict[str, list[dict]], sources: Sequence[Source],
               fines: Sequence[FineVariant], coarse_label: str, fine_label: str,
               coarse_extra: dict | None = None) -> list[dict]:
    """Our table rows (averaged metrics) in a fixed order: per source, coarse then fine.

    ``coarse_label`` / ``fine_label`` are formats with ``{source}`` (and ``{fine}``)."""
    rows = []
    for src in sources:
        keys = [("coarse", coarse_label.format(source=src.label), coarse_extra or {})]
        keys += [(fv.key, fine_label.format(source=src.label, fine=fv.label), fv.extra)
                 for fv in fines]
        for key, label, extra in keys:
            avg = average_metrics(scores.get(f"{src.key}/{key}", []))
            rows.append({"method": label, **extra, **{k: avg.get(k, float("nan"))
                                                     for k in ("psnr", "ssim", "rmse")},
                         "images": avg["count"]})
    return rows


# --------------------------------------------------------------------------- tables


@dataclasses.dataclass
class TableSpec:
    """A table of the paper: its ``number`` (files ``table<number>.*``), ``title``,
    value ``columns`` as (key, header, format) (format ``"s"``: strings as they are),
    the ``paper`` 's rows (dicts: ``method`` + column keys) and ``paper_data`` (what
    the paper evaluated on)."""

    number: int
    title: str
    columns: tuple
    paper: tuple
    paper_data: str


def paper_rows(rows: Sequence[tuple], keys: Sequence[str]) -> tuple[dict, ...]:
    """The paper's rows as dicts: each tuple is (method, value per key)."""
    return tuple({"method": r[0], **dict(zip(keys, r[1:]))} for r in rows)


def _cell(value, fmt: str) -> str:
    if value is None or value == "":
        return ""
    if fmt == "s" or isinstance(value, str):
        return str(value)
    return "n/a" if isinstance(value, float) and math.isnan(value) else format(value, fmt)


def write_table(spec: TableSpec, ours: Sequence[dict], data: Data, header: Sequence[str],
                notes: Sequence[str], failures: Sequence[dict], out_dir: str,
                per_image: Sequence[dict] = ()) -> str:
    """Write ``table<N>.md``/``.csv`` (+ ``_per_image.csv``, ``_failures.txt``), print
    and return the Markdown.

    Args:
      ours: our rows (``method``, the column keys, ``images``).
      header: protocol lines (region, crop, ...) listed under the caption.
      notes: omitted rows and other remarks.
      failures: detection failures (``image``, ``reason``, ``note``).
      per_image: per-image metric rows (``image``, ``method``, metrics).
    """
    n = spec.number
    scored = max((r.get("images", 0) for r in ours), default=0)
    lines = [f"### Table {n}: {spec.title}", ""]
    if data.default:
        lines += [DEFAULT_WARNING, ""]
    lines += [f"- Data: {data.label}.", f"- Paper's data: {spec.paper_data}."]
    lines += [f"- {h}" for h in header]
    lines += [f"- Images: {len(data.records)} selected, {scored} scored, {len(failures)} "
              "detection failure(s) (excluded from every mean, listed below).", ""]
    heads = [h for _, h, _ in spec.columns]
    lines += ["| source | method | " + " | ".join(heads) + " | images |",
              "|---|---|" + "---|" * len(heads) + "---|"]
    for source, rows in (("ours", ours), ("paper", spec.paper)):
        for r in rows:
            cells = [_cell(r.get(k), f) for k, _, f in spec.columns]
            lines.append(f"| {source} | {r['method']} | " + " | ".join(cells)
                         + f" | {r.get('images', '')} |")
    if notes:
        lines += [""] + [f"Note: {x}" for x in notes]
    if failures:
        lines += ["", f"Detection failures ({len(failures)}; all in `table{n}_failures.txt`):"]
        lines += [f"- `{f['image']}`: {f['reason']} ({f['note']})"
                  for f in failures[:MAX_LISTED_FAILURES]]
    text = "\n".join(lines) + "\n"
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"table{n}.md"), "w") as f:
        f.write(text)
    keys = [k for k, _, _ in spec.columns]
    with open(os.path.join(out_dir, f"table{n}.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["table", "source", "method", *keys, "images", "data"])
        for source, rows in (("ours", ours), ("paper", spec.paper)):
            for r in rows:
                writer.writerow([n, source, r["method"], *[r.get(k, "") for k in keys],
                                 r.get("images", ""),
                                 data.label if source == "ours" else spec.paper_data])
    if per_image:
        with open(os.path.join(out_dir, f"table{n}_per_image.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(per_image[0]))
            writer.writeheader()
            writer.writerows(per_image)
    with open(os.path.join(out_dir, f"table{n}_failures.txt"), "w") as f:
        f.writelines(f"{x['image']}\t{x['reason']}\t{x['note']}\n" for x in failures)
    print(text)
    return text


def crop_line(renders: bool = True) -> str:
    """The protocol line on cropping and alignment (and where renders are scored)."""
    return ("Crop: " + CROP.format(size=FLAGS.image_size)
            + ("; renders are scored at the decoded photo's resolution." if renders else "."))


def run_image_table(spec: TableSpec, reader: str,
                    fines_fn: Callable | None = None,
                    coarse_label: str = "Ours (Coarse): {source}",
                    fine_label: str = "Ours (Fine-grained): {source} + {fine}",
                    coarse_extra: dict | None = None, notes: Sequence[str] = (),
                    data: Data | None = None) -> str:
    """Tables 1–3 and 5: select the data, run every method, write the table.

    Args:
      spec: the table.
      reader: data-set reader (celeba, lfw, ls3d).
      fines_fn: ``recon → (fine variants, notes)``; default :func:`flag_fine_variants`.
      coarse_label, fine_label: row-label formats (see :func:`image_rows`).
      coarse_extra: extra columns of the coarse rows (Table 5's switches).
      notes: extra notes for the table.
      data: the data, when already selected (default: :func:`select_data`).
    """
    out = FLAGS.output
    data = data or select_data(reader, out)
    sources, src_notes = build_sources()
    recon = sources[0].recon
    fines, fine_notes = (fines_fn or flag_fine_variants)(recon)
    logging.info("table %d: %s", spec.number, data.label)
    scores, per_image, failures = evaluate_images(data, sources, fines, FLAGS.region, out,
                                                  f"table{spec.number}")
    ours = image_rows(scores, sources, fines, coarse_label, fine_label, coarse_extra)
    hull = FLAGS.region == "face" and any(r.landmarks is not None for r in data.records)
    header = [f"Region: {describe_region(FLAGS.region, hull)} (`--region`); PSNR/SSIM/RMSE "
              "on 0–255 images, per image, then averaged.", crop_line()]
    return write_table(spec, ours, data, header, [*src_notes, *fine_notes, *notes], failures,
                       out, per_image)
