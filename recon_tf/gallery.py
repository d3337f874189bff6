"""What a person looks at: shaded geometry views, face thumbnails and ``index.html``.

* :func:`geometry_views`: the reconstructed face as grey shaded geometry (no
  albedo, no photo) from other view points, so that its shape and detail can
  be judged apart from its texture. With a detail normal map (the fine stage's
  ``normals.png``) the shading shows the displacement's detail.
* :func:`face_crop`: a square crop around a face box, for thumbnails.
* :func:`write_index`: ``<dir>/index.html``, one row per reconstructed face:
  input | coarse | fine | detail normals | shaded geometry from two other views,
  with the face's numbers (render PSNR, loss terms, timings) and notes (:func:`face_notes`).
"""

from __future__ import annotations

import html
import os

import numpy as np
import tensorflow as tf

from recon_tf.face_model import FaceModel, vertex_normals

VIEW_YAWS_DEG = (-45.0, 45.0)
LIGHT_DIRECTION = (0.3, 0.4, 1.0)  # towards the light, viewer frame (x right, y up, z to viewer)
AMBIENT = 0.25
PREVIEW_FILES = ("thumb_input.jpg", "thumb_coarse.jpg", "geometry_views.png")  # + thumb_fine.jpg


def geometry_views(face_model: FaceModel, vertices_mm: np.ndarray,
                   normal_map: np.ndarray | None = None,
                   yaws_deg: tuple[float, ...] = VIEW_YAWS_DEG, size: int = 256) -> np.ndarray:
    """Grey Lambert renders of a face from several yaw angles, side by side.

    Args:
      face_model: the 3DMM (triangles, UVs).
      vertices_mm: float [N, 3] the face in the face-model frame (x to the
        subject's left, y up, z out of the face), any unit.
      normal_map: optional float [S, S, 3] unit normals in UV, face-model
        frame (the fine stage's detail normals); None shades with the mesh's
        vertex normals.
      yaws_deg: view rotations about the vertical axis, degrees; positive
        turns the nose towards image right.
      size: side of each view in pixels.
    Returns:
      uint8 [size, size * len(yaws_deg), 3], white background.
    """
    from recon_tf.render.detail import pixel_uv, sample_uv_map
    from recon_tf.render.rasterizer import interpolate, rasterize

    verts = np.asarray(vertices_mm, np.float64)
    centred = verts - 0.5 * (verts.min(0) + verts.max(0))
    half = 1.1 * np.abs(centred[:, :2]).max()
    depth = np.abs(centred[:, 2]).max() * 2.0 + 1e-6
    tris = tf.constant(face_model.arrays["triangles"], tf.int32)
    light = np.asarray(LIGHT_DIRECTION, np.float64)
    light /= np.linalg.norm(light)
    panels = []
    for yaw in np.deg2rad(np.asarray(yaws_deg, np.float64)):
        rot = np.array([[np.cos(yaw), 0.0, np.sin(yaw)], [0.0, 1.0, 0.0],
                        [-np.sin(yaw), 0.0, np.cos(yaw)]])
        view = centred @ rot.T
        # Orthographic: NDC x, y = position / half; nearer (larger z) = smaller NDC z.
        clip = np.concatenate([view[:, :2] / half, -view[:, 2:] / depth,
                               np.ones_like(view[:, :1])], 1)
        ids, bary, _ = rasterize(tf.constant(clip[None], tf.float32), tris, size, size)
        if normal_map is not None:
            uv = pixel_uv(face_model, ids, bary)
            normals = sample_uv_map(tf.constant(np.asarray(normal_map, np.float32)[None]), uv)
        else:
            vn = vertex_normals(tf.constant(verts[None], tf.float32), tris)
            normals = interpolate(vn, tris, ids, bary)
        n = normals[0].numpy().astype(np.float64) @ rot.T
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
        shade = AMBIENT + (1.0 - AMBIENT) * np.clip(n @ light, 0.0, 1.0)
        covered = ids[0].numpy() >= 0
        grey = np.where(covered, 0.85 * shade, 1.0)
        panels.append(np.repeat(grey[..., None], 3, -1))
    return np.clip(np.concatenate(panels, 1) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def face_crop(image: np.ndarray, box: list | np.ndarray, size: int = 256,
              margin: float = 1.6) -> np.ndarray:
    """Square crop of ``image`` around a face box, resized to ``size``².

    Args:
      image: uint8 [H, W, 3].
      box: (x, y, w, h) in ``image`` pixels.
      margin: crop side / max(w, h).
    Returns:
      uint8 [size, size, 3]; outside the image is black.
    """
    import cv2

    x, y, w, h = (float(v) for v in box)
    side = margin * max(w, h, 1.0)
    cx, cy = x + 0.5 * w, y + 0.5 * h
    scale = size / side
    matrix = np.array([[scale, 0.0, size / 2 - scale * cx], [0.0, scale, size / 2 - scale * cy]])
    return cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size),
                          flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT)


GALLERY_COLUMNS = (("input", "thumb_input.jpg"), ("coarse", "thumb_coarse.jpg"),
                   ("fine", "thumb_fine.jpg"), ("detail normals", "normals.png"),
                   ("shaded geometry, two other views", "geometry_views.png"))


def face_notes(face: dict) -> list[str]:
    """What was unusual about a face of ``summary.json``, in words: how it was found
    (mirrored, turned, by the frame check, upside down), occluders, an unsure FaceMesh
    (shape prior), the PFLD–FaceMesh check, a fine-stage fallback, a learned method."""
    notes = []
    if face.get("method", "fit") != "fit":
        notes.append(f"method {face['method']}")
    if face.get("rotation"):
        notes.append(f"found with the photo turned by {face['rotation']:g}°")
    if face.get("mirrored"):
        notes.append("found in the mirrored photo")
    if face.get("framed"):
        notes.append("found by the frame check")
    if face.get("turned"):
        notes.append("read upside down")
    if face.get("mesh_disagreement"):
        notes.append(f"PFLD and FaceMesh disagreed: {face['mesh_disagreement'][-1]}")
    if face.get("unsure_prior"):
        notes.append(f"FaceMesh unsure of the face: shape prior × {face['unsure_prior']:g}")
    if face.get("occluded_fraction"):
        notes.append(f"occluders kept out of the masks: {face['occluded_fraction']:.0%} "
                     "of the crop")
    if face.get("fine_fell_back"):
        notes.append("fine stage failed: coarse albedo, no displacement")
    return notes


def _numbers(face: dict) -> str:
    notes = face_notes(face)
    rows = [f"<b>notes</b>: {html.escape('; '.join(notes))}"] if notes else []
    for key in ("psnr", "loss", "fine_loss", "seconds"):
        values = face.get(key) or {}
        if values:
            text = ", ".join(f"{k} {v:.4g}" if isinstance(v, (int, float)) else f"{k} {v}"
                             for k, v in values.items())
            rows.append(f"<b>{html.escape(key)}</b>: {html.escape(text)}")
    return "<br>".join(rows)


def _table(title: str, rows: list[dict], headers: tuple[str, ...], keys: tuple[str, ...]
           ) -> list[str]:
    """An HTML table of ``rows`` (one cell per key), under an ``<h2>`` title; none if empty."""
    if not rows:
        return []
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = ["<tr>" + "".join(f"<td>{html.escape(str(r.get(k, '')))}</td>" for k in keys)
            + "</tr>" for r in rows]
    return [f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>", *body, "</table>"]


def write_index(out_dir: str, summary: dict, title: str = "recon_tf reconstructions") -> str:
    """Write ``<out_dir>/index.html`` from a ``summary.json``-shaped dict.

    One row per reconstructed face (``summary["images"][i]["faces"]``), then a
    table of skipped inputs with their reasons, one of the faces left out of
    reconstructed photos (``failed_faces``, e.g. ``not_a_face``) and one of the input
    folder's files without an image extension (``ignored``). Images are linked by paths
    relative to ``out_dir``; a missing file shows as an empty cell.

    Returns:
      the path written.
    """
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             "</title><style>body{font-family:sans-serif;margin:1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px;"
             "vertical-align:top;font-size:12px}img{height:180px}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    totals = summary.get("totals", {})
    parts.append("<p>" + html.escape(", ".join(f"{k}: {v}" for k, v in totals.items()
                                               if not isinstance(v, dict))) + "</p>")
    parts.append("<table><tr><th>photo / face</th>"
                 + "".join(f"<th>{html.escape(c)}</th>" for c, _ in GALLERY_COLUMNS)
                 + "<th>numbers</th></tr>")
    skipped, left_out = [], []
    for entry in summary.get("images", []):
        if entry.get("status") != "ok":
            skipped.append(entry)
            continue
        left_out += [{"path": entry["path"], **f} for f in entry.get("failed_faces", [])]
        for face in entry.get("faces", []):
            folder = face.get("output", "")
            cells = []
            for _, name in GALLERY_COLUMNS:
                rel = os.path.join(folder, name)
                cells.append(f"<td><a href='{html.escape(rel)}'><img src='{html.escape(rel)}'"
                             f" alt='{html.escape(name)}'></a></td>"
                             if os.path.exists(os.path.join(out_dir, rel)) else "<td></td>")
            label = (f"{html.escape(os.path.basename(entry['path']))}<br>face "
                     f"{face.get('face_index', 0)} of {entry.get('num_faces', 1)}<br>"
                     f"<a href='{html.escape(folder)}/'>{html.escape(folder)}/</a>")
            parts.append(f"<tr><td>{label}</td>{''.join(cells)}<td>{_numbers(face)}</td></tr>")
    parts.append("</table>")
    parts += _table("Skipped inputs", skipped, ("input", "status", "reason", "detail"),
                    ("path", "status", "reason", "note"))
    parts += _table("Faces left out", left_out, ("input", "face", "reason", "detail"),
                    ("path", "face_index", "reason", "note"))
    parts += _table("Other files of the input folder (ignored)", summary.get("ignored", []),
                    ("file", "reason"), ("path", "reason"))
    parts.append("</body></html>\n")
    path = os.path.join(out_dir, "index.html")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("\n".join(parts))
    os.replace(tmp, path)
    return path


def write_face_previews(face_model: FaceModel, face, coeffs: np.ndarray, out_dir: str,
                        normal_map: np.ndarray | None = None, size: int = 256) -> None:
    """Write one face's gallery images into ``out_dir`` (after its other outputs).

    ``thumb_input.jpg``, ``thumb_coarse.jpg``, ``thumb_fine.jpg``: square crops
    around the face box of the photo, ``render_coarse.png`` and
    ``render_fine.png`` (when present); ``geometry_views.png``: grey shaded
    geometry from two other views (:func:`geometry_views`), with the detail
    normals when given.

    Args:
      face: a :class:`recon_tf.photo_faces.PreparedFace`.
      coeffs: float [total] its coefficients.
      normal_map: optional float [S, S, 3] detail normals in UV.
    """
    import cv2

    from recon_tf.preprocess.align import apply_transform

    box = np.asarray(face.info.get("box", [0, 0, face.pixels.shape[1], face.pixels.shape[0]]),
                     np.float64)
    corners = apply_transform(face.to_original, np.array([box[:2], box[:2] + box[2:]]))
    box_orig = np.r_[corners[0], corners[1] - corners[0]]
    cv2.imwrite(os.path.join(out_dir, "thumb_input.jpg"),
                face_crop(face.pixels, box, size)[..., ::-1])
    for name in ("coarse", "fine"):
        render = os.path.join(out_dir, f"render_{name}.png")
        if os.path.exists(render):
            image = cv2.imread(render, cv2.IMREAD_COLOR)
            cv2.imwrite(os.path.join(out_dir, f"thumb_{name}.jpg"),
                        face_crop(image, box_orig, size))
    c = face_model.layout.split(tf.constant(np.asarray(coeffs, np.float32)[None]))
    verts = face_model.shape(c.identity, c.expression)[0].numpy()
    views = geometry_views(face_model, verts, normal_map, size=size)
    cv2.imwrite(os.path.join(out_dir, "geometry_views.png"), views[..., ::-1])
