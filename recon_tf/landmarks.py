"""Which mesh points the image landmarks are: 68 iBUG points with a pose-dependent
jaw contour, NoW's 7 points, and dense (FaceMesh) correspondences.

**68 points (L_lmk, Eq. 8).** The face model stores one vertex per iBUG point
(``lmk68``). Points 17–67 (brows, nose, eyes, mouth) sit on fixed places of
the face. The 17 jaw points 0–16 do not: 2D detectors (PFLD, dlib) and the
iBUG/300W annotations mark the *visible silhouette* of the face, which slides
over the surface as the head turns. :class:`ContourLandmarks` implements the
2D convention by *landmark marching* (Zhu et al., 3DDFA): every jaw point
except the chin (8) has a candidate strip of vertices on the mean shape: the
front-most vertices along a horizontal line at the height of its fixed
vertex, running from it towards the face's midline (``CONTOUR_REACH`` of the
way). For a posed face the point taken is
the candidate on the silhouette: among the candidates that face the camera
(``n · v > 0``), the outermost in the image along the strip's projected
direction. On the side turned away the fixed vertex faces away and the point
slides inwards. On the side turned towards the camera the visible outline is
the jaw bone further back: where the face model names a *jawline* vertex per
jaw point (optional key ``jawline``; ICT-FaceKit's README lists these contour
alternatives for points 0–5 and 11–16), each strip also runs from the fixed
vertex back to it, so the point slides outwards there; for a frontal face the
fixed vertex stays outermost. Measured on the three annotated photos
(``experiments/fit_eval.py``): NME 6.97 → 6.53 %. 3D-FAN-style sources
mark fixed 3D points: ``convention="3d"`` uses ``lmk68`` as is.

The choice of index carries no gradient (it is a discrete selection); the
gradient reaches the chosen vertex's position, as in 3DDFA and Deep3DFace's
successors.

**Sliding along the contour** (:meth:`ContourLandmarks.slide_jaw`, the
nearest-silhouette search; optional). The strips fix *where along* the
outline each jaw point sits (at its vertex's height), and annotations and
detectors space their jaw points differently (on the annotated photos both
PFLD's points and the fit's sit up to 10–27 % of the outer-eye distance from
the annotation *along* the outline). With sliding, each jaw point is the point
of the projected outline (the polyline through the 17 silhouette points)
nearest its target (the detected point), searched over the segments within
``JAW_SLIDE_WINDOW`` points of its own: the landmark term then measures only
how far the outline is from the detected contour, not how the two conventions
space their points. The segment and the blend weight carry no gradient; the
point is the blend of the segment's two camera-space vertices, projected.

**NoW's 7 points** (:data:`NOW_FROM_IBUG`): right-eye outer, right-eye inner,
left-eye inner, left-eye outer, nose bottom, right mouth corner, left mouth
corner (subject's right = iBUG 36, 39, 42, 45, 33, 48, 54).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

NUM_LANDMARKS = 68
JAW = tuple(range(17))
CHIN = 8
# Fraction of the way from a jaw vertex to the midline that its candidate strip covers.
CONTOUR_REACH = 0.55
# A sliding jaw point searches the outline's segments within this many points of its own.
JAW_SLIDE_WINDOW = 2
# iBUG ids of NoW's 7 landmarks (subject's right first).
NOW_FROM_IBUG = (36, 39, 42, 45, 33, 48, 54)
# Landmark weights of the fit (Deep3DFace: 20 on the nose and inner mouth, 1 elsewhere).
DEEP3D_NOSE = (28, 29, 30)
DEEP3D_INNER_MOUTH = tuple(range(60, 68))


def deep3d_landmark_weights() -> np.ndarray:
    """Deep3DFace's per-landmark weights, float32 [68]: 20 on points 28–30 and 60–67."""
    w = np.ones(NUM_LANDMARKS, np.float32)
    w[list(DEEP3D_NOSE + DEEP3D_INNER_MOUTH)] = 20.0
    return w


def contour_candidates(mean_shape: np.ndarray, lmk68: np.ndarray, reach: float = CONTOUR_REACH,
                       samples: int = 32, jawline: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Candidate vertex strips for the 17 jaw landmarks.

    Args:
      mean_shape: float [N, 3] mean shape (x right, y up, z towards the camera).
      lmk68: int [68] fixed landmark vertex ids.
      reach: how far towards the midline (x = 0) a strip goes, as a fraction of
        the fixed vertex's |x|.
      samples: points sampled along each strip.
      jawline: optional int [17] vertex ids of the jaw-bone outline (−1: none);
        strip k then also holds the front-most vertices within 3 mm of the
        straight segment from ``lmk68[k]`` to ``jawline[k]``.
    Returns:
      (ids int32 [17, K], valid bool [17, K]): candidates per jaw point, padded
      with the fixed vertex; row k always contains ``lmk68[k]`` first. The chin
      (8) has only its fixed vertex.
    """
    mean_shape = np.asarray(mean_shape, np.float64)
    lmk68 = np.asarray(lmk68, np.int64)
    xy, z = mean_shape[:, :2], mean_shape[:, 2]
    rows = []
    for k in JAW:
        fixed = int(lmk68[k])
        ids = [fixed]
        if k != CHIN:
            p = mean_shape[fixed]
            # A horizontal line from the fixed vertex towards the midline; each sample
            # takes the front-most vertex within 3 mm of it (the visible surface).
            for t in np.linspace(0.0, reach, samples)[1:]:
                d = np.linalg.norm(xy - np.array([p[0] * (1.0 - t), p[1]]), axis=1)
                near = np.nonzero(d < 0.03)[0]
                if len(near):
                    best = int(near[np.argmax(z[near])])
                    if best not in ids:
                        ids.append(best)
            if jawline is not None and jawline[k] >= 0:
                ids.extend(i for i in _segment_vertices(mean_shape, fixed, int(jawline[k]))
                           if i not in ids)
        rows.append(ids)
    width = max(len(r) for r in rows)
    ids = np.array([r + [r[0]] * (width - len(r)) for r in rows], np.int32)
    valid = np.array([[j < len(r) for j in range(width)] for r in rows])
    return ids, valid


def _segment_vertices(mean_shape: np.ndarray, start: int, end: int, samples: int = 16,
                      radius: float = 0.03) -> list[int]:
    """Vertices nearest to points along the segment between two vertices (within
    ``radius``, model units), in order from ``start`` (excluded) to ``end``."""
    a, b = mean_shape[start], mean_shape[end]
    out: list[int] = []
    for t in np.linspace(0.0, 1.0, samples + 1)[1:]:
        d = np.linalg.norm(mean_shape - (a + t * (b - a)), axis=1)
        best = int(np.argmin(d))
        if d[best] < radius and best != start and best not in out:
            out.append(best)
    return out


class ContourLandmarks:
    """The 68 model landmarks under the 2D (silhouette) or 3D (fixed) convention.

    Args:
      mean_shape: float [N, 3]; lmk68: int [68] (a :class:`FaceModel`'s arrays).
      convention: ``"2d"`` (jaw on the silhouette; PFLD, dlib, iBUG/300W
        annotations) or ``"3d"`` (fixed vertices; 3D-FAN).
      jawline: optional int [17] jaw-bone vertex ids (the face model's
        ``jawline``, −1: none), see :func:`contour_candidates`.
    """

    def __init__(self, mean_shape: np.ndarray, lmk68: np.ndarray, convention: str = "2d",
                 jawline: np.ndarray | None = None):
        if convention not in ("2d", "3d"):
            raise ValueError(f"landmark convention must be '2d' or '3d', got {convention!r}")
        self.convention = convention
        self.lmk68 = tf.constant(np.asarray(lmk68, np.int32))
        ids, valid = contour_candidates(mean_shape, lmk68, jawline=jawline)
        self.candidates = tf.constant(ids)
        self.candidate_valid = tf.constant(valid)
        # The innermost candidate of each strip (closest to the midline) gives its direction.
        xs = np.where(valid, np.abs(np.asarray(mean_shape)[ids, 0]), np.inf)
        self.inner = tf.one_hot(np.argmin(xs, axis=1), ids.shape[1], dtype=tf.float32)

    @classmethod
    def for_model(cls, face_model, convention: str = "2d") -> ContourLandmarks:
        """Build from a :class:`recon_tf.face_model.FaceModel`."""
        return cls(face_model.arrays["mean_shape"], face_model.arrays["lmk68"], convention,
                   face_model.arrays.get("jawline"))

    def vertex_ids(self, cam_vertices: tf.Tensor, cam_normals: tf.Tensor,
                   camera_position: tf.Tensor, fixed_jaw: tf.Tensor | None = None
                   ) -> tf.Tensor:
        """The vertex id of each of the 68 landmarks for posed faces.

        Args:
          cam_vertices: float32 [B, N, 3] camera-space vertices.
          cam_normals: float32 [B, N, 3] camera-space unit normals.
          camera_position: float32 [3], the camera centre in camera space
            (perspective: (0, 0, distance)); for an orthographic camera pass a
            far point on the axis.
          fixed_jaw: optional float32 [B]; where > 0.5 that example uses the
            fixed 3d vertices whatever the convention (its landmarks come from
            a 3d source, e.g. the synthetic set's projected truth).
        Returns:
          int32 [B, 68] vertex ids (no gradient).
        """
        batch = tf.shape(cam_vertices)[0]
        fixed = tf.tile(self.lmk68[None], [batch, 1])
        if self.convention == "3d":
            return fixed
        contour = self._contour_ids(cam_vertices, cam_normals, camera_position, fixed)
        if fixed_jaw is None:
            return contour
        return tf.where(fixed_jaw[:, None] > 0.5, fixed, contour)

    def _contour_ids(self, cam_vertices: tf.Tensor, cam_normals: tf.Tensor,
                     camera_position: tf.Tensor, fixed: tf.Tensor) -> tf.Tensor:
        """Silhouette jaw ids (the 2d convention), [B, 68] int32."""
        cand_v = tf.gather(cam_vertices, self.candidates, axis=1)  # [B, 17, K, 3]
        cand_n = tf.gather(cam_normals, self.candidates, axis=1)
        to_cam = camera_position - cand_v
        facing = tf.reduce_sum(cand_n * to_cam, axis=-1) > 0.0  # [B, 17, K]
        # Image-plane positions (perspective divide towards the camera centre).
        depth = camera_position[2] - cand_v[..., 2:3]
        flat = cand_v[..., :2] / tf.maximum(depth, 1e-6)
        inner = tf.reduce_sum(flat * self.inner[None, :, :, None], axis=2)  # [B, 17, 2]
        inward = inner - flat[:, :, 0]
        along = tf.reduce_sum((flat - flat[:, :, :1]) * inward[:, :, None], axis=-1)
        big = tf.constant(1e6, tf.float32)
        score = tf.where(facing, along, big + along)  # outermost visible candidate first
        score = tf.where(self.candidate_valid[None], score, 4.0 * big)
        best = tf.argmin(score, axis=-1, output_type=tf.int32)  # [B, 17]
        rows = tf.broadcast_to(tf.range(17)[None], tf.shape(best))
        jaw_ids = tf.gather_nd(self.candidates, tf.stack([rows, best], axis=-1))  # [B, 17]
        return tf.stop_gradient(tf.concat([jaw_ids, fixed[:, 17:]], axis=1))

    @staticmethod
    def slide_jaw(screen_lmk: tf.Tensor, targets: tf.Tensor, active: tf.Tensor | None = None,
                  window: int = JAW_SLIDE_WINDOW) -> tuple[tf.Tensor, tf.Tensor]:
        """Where each jaw point sits on the projected outline: nearest its target.

        Args:
          screen_lmk: float32 [B, 68, 2] image positions of the 68 landmark
            vertices (:meth:`vertex_ids`: the jaw's on the silhouette, in order).
          targets: float32 [B, 68, 2] the detected points, same pixels.
          active: optional bool [B]; False rows keep their vertices (e.g.
            examples whose landmarks come from a 3d source).
          window: jaw point k searches the segments (i, i + 1) with
            k − window ≤ i and i + 1 ≤ k + window.
        Returns:
          (segment int32 [B, 68], blend float32 [B, 68] in [0, 1]), no gradient:
          landmark k is (1 − blend) · P[segment] + blend · P[segment + 1] of the
          68 landmark vertices P (:func:`blend_landmarks`); points 17–67 and
          inactive rows are (k, 0).
        """
        jaw = len(JAW)
        a = screen_lmk[:, :jaw - 1]  # segment starts [B, 16, 2]
        d = screen_lmk[:, 1:jaw] - a
        rel = targets[:, :jaw, None] - a[:, None]  # [B, 17, 16, 2]
        length2 = tf.maximum(tf.reduce_sum(d * d, axis=-1), 1e-12)[:, None]
        t = tf.clip_by_value(tf.reduce_sum(rel * d[:, None], axis=-1) / length2, 0.0, 1.0)
        gap = tf.reduce_sum(tf.square(rel - t[..., None] * d[:, None]), axis=-1)
        k, i = np.meshgrid(np.arange(jaw), np.arange(jaw - 1), indexing="ij")
        allowed = tf.constant((i >= k - window) & (i + 1 <= k + window))
        seg = tf.argmin(tf.where(allowed[None], gap, np.inf), axis=-1, output_type=tf.int32)
        blend = tf.gather(t, seg, batch_dims=2)
        batch = tf.shape(screen_lmk)[0]
        rest = tf.tile(tf.range(jaw, NUM_LANDMARKS)[None], [batch, 1])
        seg = tf.concat([seg, rest], axis=1)
        blend = tf.concat([blend, tf.zeros(tf.shape(rest), tf.float32)], axis=1)
        if active is not None:
            seg = tf.where(active[:, None], seg, tf.range(NUM_LANDMARKS)[None])
            blend = tf.where(active[:, None], blend, 0.0)
        return tf.stop_gradient(seg), tf.stop_gradient(blend)

    def points(self, cam_vertices: tf.Tensor, cam_normals: tf.Tensor,
               camera_position: tf.Tensor) -> tf.Tensor:
        """Camera-space 3D landmark positions, float32 [B, 68, 3] (differentiable)."""
        ids = self.vertex_ids(cam_vertices, cam_normals, camera_position)
        return tf.gather(cam_vertices, ids, batch_dims=1)


def blend_landmarks(points: tf.Tensor, segment: tf.Tensor, blend: tf.Tensor) -> tf.Tensor:
    """(1 − blend) · points[segment] + blend · points[segment + 1] per landmark.

    Args:
      points: float32 [B, 68, C] (the 68 landmark vertices' positions).
      segment, blend: [B, 68] from :meth:`ContourLandmarks.slide_jaw`.
    Returns:
      float32 [B, 68, C]; differentiable in ``points``.
    """
    start = tf.gather(points, segment, batch_dims=1)
    end = tf.gather(points, tf.minimum(segment + 1, NUM_LANDMARKS - 1), batch_dims=1)
    return start + blend[..., None] * (end - start)


# Groups of the 68 points whose output vertices :func:`calibrate_output_landmarks` may
# re-choose (the jaw, 0–16, follows the silhouette instead).
LANDMARK_GROUPS = {"brows": tuple(range(17, 27)), "nose": tuple(range(27, 36)),
                   "eyes": tuple(range(36, 48)), "mouth": tuple(range(48, 68))}


def vertex_mirror(mean_shape: np.ndarray) -> np.ndarray:
    """Each vertex's left–right mirror: the vertex nearest (−x, y, z), int [N].

    Args:
      mean_shape: float [N, 3], the face model's mean shape (x across the face).
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(mean_shape, np.float64)
    return cKDTree(pts).query(pts * np.array([-1.0, 1.0, 1.0]))[1].astype(np.int32)


def output_landmark_costs(screens: np.ndarray, detected: np.ndarray, point: int,
                          candidates: np.ndarray) -> np.ndarray:
    """Mean distance, over faces, from each candidate vertex's projection to the
    detected point, in outer-eye distances (of the detected points 36 and 45).

    Args:
      screens: float [F, N, 2] every vertex of each fitted face, projected (pixels).
      detected: float [F, 68, 2] the detector's points on the same photos (pixels).
      point: the iBUG point.
      candidates: int [C] vertex ids.
    Returns:
      float [C].
    """
    eye = np.linalg.norm(detected[:, 36] - detected[:, 45], axis=-1)
    dist = np.linalg.norm(screens[:, candidates] - detected[:, point, None], axis=-1)
    return (dist / np.maximum(eye, 1e-6)[:, None]).mean(axis=0)


def detector_distance(screens: np.ndarray, detected: np.ndarray, ids: np.ndarray,
                      points: tuple[int, ...]) -> float:
    """Mean distance from the projected ``ids`` to the detected points, over
    ``points`` and faces, in % of the detected outer-eye distance (36–45).

    Args:
      screens: float [F, N, 2]; detected: float [F, 68, 2]; ids: int [68].
    """
    pts = list(points)
    eye = np.linalg.norm(detected[:, 36] - detected[:, 45], axis=-1)
    dist = np.linalg.norm(screens[:, np.asarray(ids)[pts]] - detected[:, pts], axis=-1)
    return float(100.0 * np.mean(dist / np.maximum(eye, 1e-6)[:, None]))


def calibrate_output_landmarks(screens: np.ndarray, detected: np.ndarray,
                               mean_shape: np.ndarray, lmk68: np.ndarray, allowed: np.ndarray,
                               points: tuple[int, ...], radius: float) -> np.ndarray:
    """Re-choose the vertex of each of ``points`` so that, on fitted faces, its
    projection lands where a 2D detector puts the point, on average.

    The fit places ``lmk68`` under the detector's points only as far as the
    photometric term and the priors let it, and the model's vertex for a point is
    not always where annotators of the iBUG/300W convention mark it (the brows sit
    3–5 % of the outer-eye distance above PFLD's on in-the-wild fits). For each
    point, the candidate vertices within ``radius`` of its ``lmk68`` vertex on the
    mean shape (and ``allowed``) are scored by :func:`output_landmark_costs`
    over many fitted photos, and the best is taken. Left–right pairs are chosen
    together (a candidate's cost is its own plus its mirror's at the paired
    point, :data:`recon_tf.data.pipeline.FLIP_PERMUTATION_68`); points on the
    midline choose among vertices that are their own mirror. The result is
    symmetric on a symmetric mean shape.

    Args:
      screens: float [F, N, 2] every vertex of each fitted face, projected (pixels).
      detected: float [F, 68, 2] the detector's points on the same photos.
      mean_shape: float [N, 3] (any unit; ``radius`` is in the same unit).
      lmk68: int [68] the model's landmark vertices (the start).
      allowed: bool [N] vertices that may be chosen (e.g. the front face).
      points: iBUG points to re-choose; their mirrors are re-chosen with them.
      radius: search radius around each point's ``lmk68`` vertex.
    Returns:
      int32 [68]: ``lmk68`` with ``points`` (and their mirrors) replaced.
    """
    from recon_tf.data.pipeline import FLIP_PERMUTATION_68

    mean_shape = np.asarray(mean_shape, np.float64)
    mirror = vertex_mirror(mean_shape)
    allowed = np.asarray(allowed, bool)
    ids = np.asarray(lmk68, np.int32).copy()
    done = set()
    for k in points:
        if k in done:
            continue
        m = int(FLIP_PERMUTATION_68[k])
        ok = allowed & (np.linalg.norm(mean_shape - mean_shape[lmk68[k]], axis=1) < radius)
        if m == k:
            ok &= mirror == np.arange(len(mirror))
        cand = np.where(ok)[0]
        if not len(cand):
            continue
        cost = output_landmark_costs(screens, detected, k, cand)
        if m != k:
            cost = cost + output_landmark_costs(screens, detected, m, mirror[cand])
        ids[k] = cand[int(np.argmin(cost))]
        ids[m] = mirror[ids[k]]
        done.update((k, m))
    return ids
