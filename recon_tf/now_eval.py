"""NoW benchmark evaluation: scan-to-mesh error in millimetres (numpy/scipy only).

The official protocol (Sanyal et al., "Learning to Regress 3D Face Shape and
Expression from an Image without 3D Supervision", CVPR 2019; code:
github.com/soubhiksanyal/now_evaluation, ``scan2mesh_computations.py``,
``compute_error.py``, ``cumulative_errors.py``), step by step:

1. :func:`crop_scan`: keep the scan vertices within a sphere; centre = nose
   bottom + 0.3 (nose bridge − nose bottom), nose bridge = midpoint of the
   inner eye corners; radius = 1.4 (outer-eye distance + |nose bridge − nose
   bottom|) / 2. The kept vertices are the measurement points.
2. :func:`similarity_procrustes`: scale + rotation + translation from the 7
   landmark pairs maps the prediction onto the scan (the official
   ``procrustes`` may reflect when that fits better; we never reflect).
3. :func:`rigid_refine`: minimise the sum of squared scan-to-mesh distances;
   the official non-metrical protocol refines scale, rotation and translation
   (its metrical variant keeps the scale), so :func:`evaluate_scan` refines
   the scale by default (``refine_scale=True``).
4. :func:`point_to_mesh_distance`: unsigned distance from every cropped scan
   vertex to the aligned predicted surface, in scan units (mm).
5. :func:`summarize`: all scans' distances pooled (``np.hstack``, as
   ``cumulative_errors.py``) → median, mean, std; the cumulative error curve
   (:func:`cumulative_error_curve`, the paper's Fig. 11) is the % of pooled
   points with error ≤ x mm.

The 7 landmarks (:data:`NOW_LANDMARK_NAMES`, subject's right first): eye
corners right-outer, right-inner, left-inner, left-outer, nose bottom, right
and left mouth corners = iBUG (36, 39, 42, 45, 33, 48, 54) =
``recon_tf.landmarks.NOW_FROM_IBUG``. NoW documents the order only as a figure
(``landmarks_7_annotated.png``); this order is the one the crop code assumes
(0/3 outer and 1/2 inner eye corners, 4 nose bottom) and the one FLAME-based
submissions export (MICA: 51-point subset [19, 22, 25, 28, 16, 31, 37]).
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from recon_tf.mesh_distance import MeshDistance, point_to_mesh_distance

NOW_LANDMARK_NAMES = ("right_eye_outer", "right_eye_inner", "left_eye_inner",
                      "left_eye_outer", "nose_bottom", "right_mouth_corner",
                      "left_mouth_corner")
CROP_CENTRE_FRACTION = 0.3  # from the nose bottom towards the nose bridge
CROP_RADIUS_FACTOR = 1.4    # × mean of (outer-eye distance, nose length)

# --------------------------------------------------------------------------- readers


def read_pp_landmarks(path: str, expected: int | None = 7) -> np.ndarray:
    """Picked points of a MeshLab ``.pp`` file (NoW's ``scans_lmks_onlypp``).

    The file is XML: ``<PickedPoints>`` holding ``<point x=".." y=".." z=".."
    name=".." active=".."/>`` elements; points are returned in file order (the
    NoW order, see :data:`NOW_LANDMARK_NAMES`), whatever their ``active`` flag.

    Args:
      path: the ``.pp`` file.
      expected: required number of points (7 for NoW); None accepts any.
    Returns:
      float64 [K, 3] points in the scan's units (mm for NoW).
    Raises:
      ValueError: no points, or not ``expected`` of them.
    """
    with open(path, errors="replace") as f:
        text = f.read()
    try:
        root = ET.fromstring(text)
        pts = [[float(p.attrib[k]) for k in "xyz"] for p in root.iter("point")]
    except (ET.ParseError, KeyError, ValueError):
        # Tolerate slightly malformed XML: read x/y/z attributes of each <point ...>.
        pts = []
        for tag in re.findall(r"<point\b[^>]*>", text):
            attrs = dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', tag))
            pts.append([float(attrs[k]) for k in "xyz"])
    if not pts:
        raise ValueError(f"{path}: no <point> entries")
    if expected is not None and len(pts) != expected:
        raise ValueError(f"{path}: {len(pts)} points, expected {expected}")
    return np.asarray(pts, np.float64)


def write_pp_landmarks(path: str, points: np.ndarray, names: Sequence[str] | None = None) -> None:
    """Write points as a MeshLab ``.pp`` file (readable by :func:`read_pp_landmarks`).

    Args:
      path: output file.
      points: float [K, 3].
      names: K point names (default "1".."K").
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    names = [str(i + 1) for i in range(len(pts))] if names is None else names
    lines = ["<!DOCTYPE PickedPoints>", "<PickedPoints>", " <DocumentData>",
             '  <DataFileName name=""/>', '  <templateName name=""/>', " </DocumentData>"]
    lines += [f' <point x="{x:.6f}" y="{y:.6f}" z="{z:.6f}" active="1" name="{n}"/>'
              for (x, y, z), n in zip(pts, names)]
    lines.append("</PickedPoints>")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def read_obj_vertices_faces(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an OBJ (polygons fan-triangulated; vt/vn/colours ignored).

    Uses :func:`recon_tf.export.read_obj`.

    Returns:
      (float64 [N, 3] vertices, int64 [M, 3] 0-based triangles).
    """
    from recon_tf.export import read_obj

    mesh = read_obj(path)
    return mesh.vertices, mesh.faces


def read_now_prediction(mesh_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A NoW submission entry: ``<image>.obj`` (or ``.ply``) and its 7 landmarks.

    The landmarks are ``<image>.npy`` (float [7, 3]) or ``<image>.txt`` (one
    point per line, 3 numbers separated by spaces or commas), next to the mesh.

    Returns:
      (vertices float64 [N, 3], faces int64 [M, 3], landmarks float64 [7, 3]).
    """
    from recon_tf.export import read_ply

    stem, ext = os.path.splitext(mesh_path)
    if ext.lower() == ".ply":
        mesh = read_ply(mesh_path)
        verts, faces = mesh.vertices, mesh.faces
    else:
        verts, faces = read_obj_vertices_faces(mesh_path)
    if os.path.exists(stem + ".npy"):
        lmk = np.load(stem + ".npy")
    elif os.path.exists(stem + ".txt"):
        with open(stem + ".txt") as f:
            rows = [re.split(r"[,\s]+", ln.strip()) for ln in f if ln.strip()]
        lmk = np.array(rows, np.float64)
    else:
        raise FileNotFoundError(f"no landmarks {stem}.npy or {stem}.txt")
    lmk = np.asarray(lmk, np.float64).reshape(-1, 3)
    if len(lmk) != 7:
        raise ValueError(f"{stem}: {len(lmk)} landmarks, expected 7")
    return np.asarray(verts, np.float64), np.asarray(faces, np.int64), lmk


# --------------------------------------------------------------------------- transforms


def similarity_procrustes(src: np.ndarray, dst: np.ndarray, with_scale: bool = True
                          ) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ≈ scale · R · src + t`` (Umeyama 1991, no reflection).

    Args:
      src, dst: float [K, 3] corresponding points, K ≥ 3 not collinear.
      with_scale: fit the scale (else scale = 1: a rigid Kabsch fit).
    Returns:
      (scale > 0, R float64 [3, 3] with det +1, t float64 [3]); apply with
      :func:`apply_similarity`.
    """
    s, d = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if s.shape != d.shape or s.ndim != 2 or s.shape[1] != 3:
        raise ValueError(f"src {s.shape} and dst {d.shape} must both be [K, 3]")
    ms, md = s.mean(0), d.mean(0)
    s0, d0 = s - ms, d - md
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(s))
    flip = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[2] = -1.0
    rot = u @ np.diag(flip) @ vt
    var_s = np.mean(np.sum(s0 ** 2, axis=1))
    scale = float(np.sum(sig * flip) / var_s) if with_scale and var_s > 0 else 1.0
    return scale, rot, md - scale * rot @ ms


def apply_similarity(points: np.ndarray, scale: float, rotation: np.ndarray,
                     translation: np.ndarray) -> np.ndarray:
    """``scale · R · p + t`` for every row p of ``points`` (float [N, 3]) → float64 [N, 3]."""
    return (scale * np.asarray(points, np.float64) @ np.asarray(rotation, np.float64).T
            + np.asarray(translation, np.float64))


# --------------------------------------------------------------------------- alignment


class Refinement(NamedTuple):
    """Result of :func:`rigid_refine`.

    Attributes:
      verts: float64 [N, 3] the refined predicted vertices.
      scale, rotation, translation: the refinement, ``verts = scale · R · v + t``
        applied to the input vertices (scale 1 unless ``with_scale``).
      rms: float64 [steps + 1] RMS scan-to-mesh distance before refinement and
        after each accepted step.
    """

    verts: np.ndarray
    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    rms: np.ndarray


def rigid_refine(pred_verts: np.ndarray, faces: np.ndarray, scan_points: np.ndarray,
                 iterations: int = 50, with_scale: bool = False, tol: float = 1e-8
                 ) -> Refinement:
    """ICP-style refinement of the prediction against scan points (scan-to-mesh).

    Minimises E(T) = Σ dist(scan_i, T(mesh))², the official objective (sum of
    squared unsigned scan-to-mesh distances), over a rigid T (rotation +
    translation; + a uniform scale when ``with_scale``, as NoW's non-metrical
    protocol does). Each step takes the exact closest points q_i
    (:class:`MeshDistance`) and linearises dist_i along u_i = (scan_i −
    q_i)/dist_i (the face normal when dist_i ≈ 0), i.e. point-to-plane ICP;
    the Gauss-Newton system is damped Levenberg-Marquardt style and a step is
    kept only when the exact E decreases, so E never increases (point-to-point
    ICP slides too slowly along smooth faces). The mesh's search structure is
    built once: the scan points are moved by T⁻¹ instead of moving the mesh.

    Args:
      pred_verts: float [N, 3] prediction, already roughly aligned (landmarks).
      faces: int [M, 3] its triangles.
      scan_points: float [P, 3] the cropped scan's vertices.
      iterations: maximum accepted steps (0 = no refinement).
      with_scale: also refine a uniform scale (kept > 0).
      tol: stop when the RMS improves by less than this fraction.
    Returns:
      a :class:`Refinement`.
    """
    from scipy.spatial.transform import Rotation

    v = np.asarray(pred_verts, np.float64)
    scan = np.asarray(scan_points, np.float64).reshape(-1, 3)
    md = MeshDistance(v, faces)
    tri = md.triangles
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    centre = scan.mean(0)

    def evaluate(tf):
        s, r, t = tf
        dist, c, f = md.query((scan - t) @ r / s)  # T⁻¹(scan): row form of Rᵀ(x − t)/s
        return s * dist, s * c @ r.T + t, f

    tf = (1.0, np.eye(3), np.zeros(3))
    dist, q, face = evaluate(tf)
    cost = float(np.sum(dist ** 2))
    rms = [np.sqrt(cost / max(len(scan), 1))]
    lam = 1e-4
    for _ in range(iterations):
        diff = scan - q
        tiny = dist <= 1e-12 * (1.0 + np.abs(scan).max())
        u = np.where(tiny[:, None], normals[face] @ tf[1].T,
                     diff / np.where(tiny, 1.0, dist)[:, None])
        arm = q - centre
        cols = [np.cross(arm, u), u] + ([np.sum(u * arm, axis=1, keepdims=True)]
                                        if with_scale else [])
        jac = np.concatenate(cols, axis=1)
        hess, grad = jac.T @ jac, jac.T @ dist
        accepted = False
        for _ in range(12):
            damped = hess + lam * np.diag(np.diag(hess)) + 1e-12 * np.eye(len(hess))
            x = np.linalg.solve(damped, grad)
            s_inc = float(np.exp(x[6])) if with_scale else 1.0
            r_inc = Rotation.from_rotvec(x[:3]).as_matrix()
            trial = (s_inc * tf[0], r_inc @ tf[1],
                     s_inc * r_inc @ (tf[2] - centre) + centre + x[3:6])
            t_dist, t_q, t_face = evaluate(trial)
            t_cost = float(np.sum(t_dist ** 2))
            if t_cost < cost:
                tf, dist, q, face, accepted = trial, t_dist, t_q, t_face, True
                lam = max(lam / 4.0, 1e-9)
                break
            lam *= 8.0
        if not accepted:
            break
        improvement = cost - t_cost
        cost = t_cost
        rms.append(np.sqrt(cost / len(scan)))
        if improvement <= tol * (cost + improvement):
            break
    scale, rot, trans = tf
    return Refinement(apply_similarity(v, scale, rot, trans), scale, rot, trans, np.array(rms))


# --------------------------------------------------------------------------- NoW protocol


def now_crop_sphere(scan_lmk7: np.ndarray) -> tuple[np.ndarray, float]:
    """NoW's face crop sphere from the scan's 7 landmarks.

    Args:
      scan_lmk7: float [7, 3] in NoW order (:data:`NOW_LANDMARK_NAMES`).
    Returns:
      (centre float64 [3], radius float) in the scan's units.
    """
    lmk = np.asarray(scan_lmk7, np.float64).reshape(7, 3)
    nose_bottom = lmk[4]
    nose_bridge = 0.5 * (lmk[1] + lmk[2])
    centre = nose_bottom + CROP_CENTRE_FRACTION * (nose_bridge - nose_bottom)
    outer_eye = np.linalg.norm(lmk[0] - lmk[3])
    nose = np.linalg.norm(nose_bridge - nose_bottom)
    return centre, float(CROP_RADIUS_FACTOR * (outer_eye + nose) / 2.0)


def crop_scan(scan_verts: np.ndarray, scan_lmk7: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the scan vertices inside NoW's face sphere (:func:`now_crop_sphere`, ≤ radius).

    Args:
      scan_verts: float [N, 3] scan vertices (mm).
      scan_lmk7: float [7, 3] the scan's landmarks (NoW order).
    Returns:
      (points float64 [P, 3] the kept vertices, keep bool [N]).
    """
    v = np.asarray(scan_verts, np.float64)
    centre, radius = now_crop_sphere(scan_lmk7)
    keep = np.linalg.norm(v - centre, axis=1) <= radius
    return v[keep], keep


def evaluate_scan(pred_verts: np.ndarray, pred_faces: np.ndarray, pred_lmk7: np.ndarray,
                  scan_verts: np.ndarray, scan_faces: np.ndarray | None, scan_lmk7: np.ndarray,
                  refine_scale: bool = True, iterations: int = 50) -> np.ndarray:
    """NoW error of one prediction against its subject's scan.

    Steps: :func:`crop_scan` → similarity from ``pred_lmk7`` onto
    ``scan_lmk7`` → :func:`rigid_refine` (scale refined too by default, as the
    official non-metrical protocol) → distance of each cropped scan vertex to
    the aligned predicted surface.

    Args:
      pred_verts: float [N, 3] predicted mesh in any units (the similarity fixes scale).
      pred_faces: int [M, 3] its triangles.
      pred_lmk7: float [7, 3] the prediction's NoW landmarks (same units/frame).
      scan_verts: float [S, 3] ground-truth scan (mm).
      scan_faces: the scan's triangles; unused (errors are measured from scan
        vertices, as in NoW), accepted for a uniform call.
      scan_lmk7: float [7, 3] scan landmarks from its ``.pp`` file.
      refine_scale: refine the scale in step 3 (False: NoW's metrical variant,
        which keeps the landmark similarity's scale here).
      iterations: maximum refinement steps (0 skips the refinement).
    Returns:
      float64 [P] unsigned distances in mm, one per cropped scan vertex.
    """
    del scan_faces
    points, _ = crop_scan(scan_verts, scan_lmk7)
    if len(points) == 0:
        raise ValueError("the NoW crop kept no scan vertices; check the scan landmarks")
    sim = similarity_procrustes(pred_lmk7, scan_lmk7)
    aligned = apply_similarity(pred_verts, *sim)
    refined = rigid_refine(aligned, pred_faces, points, iterations=iterations,
                           with_scale=refine_scale)
    dist, _ = point_to_mesh_distance(points, refined.verts, pred_faces)
    return dist


def summarize(errors: np.ndarray | Sequence[np.ndarray]) -> dict[str, float]:
    """Median, mean and std (mm) of NoW errors, pooled over all points of all scans.

    As the official ``cumulative_errors.py``: the per-scan arrays are
    concatenated and the statistics taken over every point (scans with more
    points weigh more); std is the population standard deviation (ddof 0).

    Args:
      errors: float [P] distances, or a sequence of per-scan arrays.
    Returns:
      ``{"median": float, "mean": float, "std": float}`` (NaN when empty).
    """
    pooled = _pool(errors)
    if pooled.size == 0:
        return {"median": float("nan"), "mean": float("nan"), "std": float("nan")}
    return {"median": float(np.median(pooled)), "mean": float(np.mean(pooled)),
            "std": float(np.std(pooled))}


def _pool(errors: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    if isinstance(errors, np.ndarray) and errors.dtype != object:
        return errors.astype(np.float64).ravel()
    return np.concatenate([np.zeros(0)] + [np.asarray(e, np.float64).ravel() for e in errors])


def cumulative_error(errors: np.ndarray | Sequence[np.ndarray], max_mm: float = 10.0,
                     num: int = 1001) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative error curve: % of pooled points with error ≤ x.

    Args:
      errors: float [P] distances (mm), or per-scan arrays (pooled).
      max_mm: the curve's last x.
      num: samples on x.
    Returns:
      (x float64 [num] in mm from 0 to ``max_mm``, percentage float64 [num] in [0, 100]).
    """
    pooled = np.sort(_pool(errors))
    x = np.linspace(0.0, max_mm, num)
    if pooled.size == 0:
        return x, np.zeros(num)
    return x, 100.0 * np.searchsorted(pooled, x, side="right") / pooled.size


def cumulative_error_curve(errors_by_method: Mapping[str, np.ndarray | Sequence[np.ndarray]],
                           path: str, max_mm: float = 10.0, title: str = "") -> None:
    """Plot cumulative error curves (x: error in mm, y: % of points; the paper's Fig. 11).

    Each legend entry also gives the method's pooled median/mean (mm). Drawn
    with matplotlib's Agg canvas (no display, no global pyplot state) and saved
    as an RGB PNG (3 channels).

    Args:
      errors_by_method: method name → distances (mm), float [P] or per-scan arrays.
      path: output ``.png``.
      max_mm: x-axis limit.
      title: optional plot title.
    """
    import cv2
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for name, errs in errors_by_method.items():
        x, y = cumulative_error(errs, max_mm)
        st = summarize(errs)
        ax.plot(x, y, label=f"{name} (median {st['median']:.2f}, mean {st['mean']:.2f} mm)")
    ax.set(xlim=(0.0, max_mm), ylim=(0.0, 100.0), xlabel="Error [mm]",
           ylabel="Percentage of points [%]", title=title)
    ax.grid(True, alpha=0.3)
    if errors_by_method:
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, np.ascontiguousarray(rgb[..., ::-1])):
        raise OSError(f"could not write {path}")
