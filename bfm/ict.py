"""ICT-FaceKit → recon_tf face model.

ICT-FaceKit (MIT, USC ICT, https://github.com/ICT-VGL/ICT-FaceKit) ships a
full head (26719 vertices) as OBJ files: ``generic_neutral_mesh.obj``,
``identity000.obj`` … (100 identity modes, already scaled so weights are
~ N(0, 1)), and 53 ARKit-style expression blendshapes (``jawOpen.obj`` …,
weights in [0, 1]), plus ``vertex_indices.json``. We use the face region, the
first 9409 vertices, and the faces whose vertices all lie in it.

Conversion choices (ours; documented in the README):

* units: ICT is in centimetres; we scale by 0.1 to decimetres (BFM/Deep3DFace
  units, so the same camera defaults serve both) and centre the mean shape.
* expression order (:func:`order_expressions`): mirror pairs (``…_L``/``…_R``,
  ``…Left``/``…Right``) stay adjacent; :data:`PHOTO_EXPRESSIONS` come first
  (brows, lids and lips as photos show them: ranked by displacement alone, the
  29 slots held cheek puffs and jaw shifts but no lowered brows), the rest are
  ranked by their larger member's largest vertex displacement, largest
  first; the paper's 29 expression
  coefficients take the most expressive shapes without ever splitting a pair
  (29 is odd: a pair that would be split is skipped for the next single
  shape, and follows right after). ``exp_bounds`` = [0, 1] for every shape.
* masks: ICT's face region includes scalp, ears and neck; ``front_mask`` is
  :func:`bfm.regions.front_mask`, ``skin_mask`` the front mask without brows,
  lash lines, nostrils and the lip line.
* albedo: ICT has none; :func:`bfm.albedo.default_albedo_model` (its
  ``albedo_provenance`` is :data:`bfm.albedo.PROVENANCE`).
* landmarks: ``idx_to_landmark_verts`` of ``vertex_indices.json``, which the
  shared npz stores as ``lmk68``. ``jawline`` (:data:`ICT_JAWLINE`): the contour
  alternatives that ICT-FaceKit's README lists for the jaw (right jawline for
  Multi-PIE 0–7, left for 9–16), kept where they differ from ``lmk68``; the
  2D landmark convention slides the jaw points towards them on the side turned
  towards the camera (:mod:`recon_tf.landmarks`). ``lmk68_output``
  (:data:`ICT_OUTPUT_LANDMARKS`, ours): the vertices that ``landmarks68.txt``
  reports for points 17–67, calibrated on in-the-wild fits by
  ``tools/calibrate_landmarks.py`` (README, "Output landmarks").

Command line: ``python -m bfm.convert --source=ict_obj --input=FaceXModel --output=ict.npz``.
"""

from __future__ import annotations

import json
import os

import numpy as np

from bfm.albedo import PROVENANCE, default_albedo_model
from bfm.regions import face_regions, front_mask
from recon_tf.assets import require_file
from recon_tf.coeffs import CoeffLayout
from recon_tf.export import read_obj
from recon_tf.face_model import FaceModelFormatError, validate_arrays

ICT_SOURCE = "ICT-FaceKit, https://github.com/ICT-VGL/ICT-FaceKit (FaceXModel directory)"
CM_TO_DM = 0.1
FACE_REGION_VERTICES = 9409
PRIMARY_EXPRESSIONS = CoeffLayout().exp_dim  # the paper's 29
MIRROR_SUFFIXES = (("_L", "_R"), ("Left", "Right"))
# The blendshapes that the paper's 29 expression slots take first (ours): the movements
# photos in the wild show, one per facial action (brows lowered / raised inside / outside,
# lids closed / squinted / widened, lips smiling / frowning / stretched / raised / lowered /
# dimpled / pressed, jaw open, lips closed and puckered). The rest follow by reach.
PHOTO_EXPRESSIONS = ("jawOpen", "mouthSmile", "browDown", "browInnerUp", "browOuterUp",
                     "eyeBlink", "eyeSquint", "eyeWide", "mouthFrown", "mouthStretch",
                     "mouthUpperUp", "mouthLowerDown", "mouthDimple", "mouthPress",
                     "mouthClose", "mouthPucker")
# ICT-FaceKit README's jawline vertex ids (0-based) for Multi-PIE jaw points 0–7 and 9–16.
ICT_JAWLINE = ((1278, 1272, 12, 1834, 243, 781, 2199, 1447),
               (3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496))

# Vertex ids reported for iBUG points 17–67 (``lmk68_output``; ours): where PFLD puts each
# point on the main job's fits of the 79 faces of images/faces (2026-11-27, the defaults of
# that day's session 6, with the robust FaceMesh term), chosen by
# tools/calibrate_landmarks.py (6 mm radius; a group only where it lowered the fit–detector
# distance on held-out photos: not the nose).
ICT_OUTPUT_LANDMARKS = (
    # brows 17–26
    269, 1009, 1915, 2041, 2026, 4223, 4237, 4115, 3229, 2510,
    # nose 27–35 (lmk68: not re-chosen)
    978, 4527, 4942, 4857, 1140, 2075, 1147, 4269, 3360,
    # eyes 36–47
    568, 1576, 1573, 604, 1557, 1552, 2845, 3787, 3790, 2809, 3766, 3771,
    # mouth 48–67
    5926, 5695, 2081, 5525, 4275, 6200, 6431, 6346, 6480, 5518, 5976, 5841,
    5619, 6039, 5526, 6543, 6124, 6484, 5515, 5980,
)


def output_landmark_ids(lmk68: np.ndarray, num_vertices: int) -> np.ndarray:
    """int32 [68]: ``lmk68`` with points 17–67 taken from :data:`ICT_OUTPUT_LANDMARKS`
    (kept from ``lmk68`` where an id is outside the mesh)."""
    ids = np.asarray(lmk68, np.int32).copy()
    table = np.asarray(ICT_OUTPUT_LANDMARKS, np.int32)
    inner = ids[17:]
    ids[17:] = np.where(table < num_vertices, table, inner)
    return ids


def jawline_ids(lmk68: np.ndarray, num_vertices: int) -> np.ndarray:
    """int32 [17]: :data:`ICT_JAWLINE` per jaw point, −1 at the chin, where it equals
    ``lmk68`` or where the id is outside the mesh."""
    ids = np.array(ICT_JAWLINE[0] + (-1,) + ICT_JAWLINE[1], np.int64)
    keep = (ids >= 0) & (ids < num_vertices) & (ids != np.asarray(lmk68)[:17])
    return np.where(keep, ids, -1).astype(np.int32)


def _compact_uv(tri_uv: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the UV points used by ``tri_uv``; renumber ids."""
    used, inverse = np.unique(tri_uv.reshape(-1), return_inverse=True)
    return uv[used].astype(np.float32), inverse.reshape(tri_uv.shape).astype(np.int32)


def _mirror_key(name: str) -> tuple[str, int] | None:
    """(pair key, side 0/1) of a left/right blendshape name (eyeBlink_L → side 0), or None."""
    for suffixes in MIRROR_SUFFIXES:
        for side, suffix in enumerate(suffixes):
            if name.endswith(suffix) and len(name) > len(suffix):
                return name[:-len(suffix)] + "|" + suffixes[0], side
    return None


def order_expressions(names: list[str], reach: np.ndarray,
                      primary: int = PRIMARY_EXPRESSIONS,
                      preferred: tuple[str, ...] = ()) -> list[int]:
    """Blendshape order: mirror pairs adjacent, preferred then most expressive first,
    no pair split by the first ``primary`` shapes.

    Args:
      names: K blendshape names.
      reach: float [K], each shape's largest vertex displacement.
      primary: the prefix that must hold whole pairs (the paper's 29).
      preferred: unit names (a pair by its base name, e.g. ``"browDown"``) that
        come first, in this order.
    Returns:
      a permutation of range(K): left before right inside a pair; units (a
      pair or a single shape) ranked preferred first, then by their largest reach. The first
      ``primary`` slots are filled greedily in rank order, skipping a pair
      that does not fit (it comes right after); if no single shape is left to
      fill the last slot, the pair is split there.
    """
    reach = np.asarray(reach, np.float64)
    groups: dict[str, list[tuple[int, int]]] = {}
    for i, name in enumerate(names):
        key = _mirror_key(name)
        groups.setdefault(key[0] if key else f"#{i}", []).append((key[1] if key else 0, i))
    units = []
    base = {}
    for key, members in groups.items():
        if len(members) == 2 and members[0][0] != members[1][0]:
            units.append([i for _, i in sorted(members)])
            base[units[-1][0]] = key.split("|")[0]
        else:
            units += [[i] for _, i in members]
    rank = {name: k for k, name in enumerate(preferred)}

    def unit_rank(unit: list[int]) -> int:
        return rank.get(base.get(unit[0], names[unit[0]]), len(rank))

    units.sort(key=lambda u: (unit_rank(u), -reach[u].max(), min(u)))
    first: list[int] = []
    rest: list[int] = []
    for unit in units:
        (first if len(first) + len(unit) <= primary else rest).extend(unit)
    return first + rest


def build_model(mean_cm: np.ndarray, id_basis_cm: np.ndarray, exp_basis_cm: np.ndarray,
                exp_names: list[str], tris: np.ndarray, tri_uv: np.ndarray, uv: np.ndarray,
                lmk68: np.ndarray, num_albedo_modes: int = 80) -> dict:
    """Assemble a recon_tf face-model dict from ICT arrays in centimetres.

    Args:
      mean_cm: [N, 3] neutral face region.
      id_basis_cm: [K_id, N, 3] identity deltas.
      exp_basis_cm: [K_exp, N, 3] blendshape deltas.
      exp_names: K_exp blendshape names.
      tris, tri_uv: [T, 3] vertex and UV ids; uv: [U, 2].
      lmk68: [68] landmark vertex ids.
      num_albedo_modes: modes of the default albedo basis.
    """
    mean = (mean_cm - mean_cm.mean(axis=0, keepdims=True)) * CM_TO_DM
    exp_basis_cm = np.asarray(exp_basis_cm)
    reach = np.linalg.norm(exp_basis_cm, axis=-1).max(axis=-1) if len(exp_basis_cm) else []
    order = order_expressions(list(exp_names), np.asarray(reach), preferred=PHOTO_EXPRESSIONS)
    uv_c, tri_uv_c = _compact_uv(np.asarray(tri_uv), np.asarray(uv))
    tris = np.asarray(tris, np.int32)
    lmk68 = np.asarray(lmk68, np.int32)
    front = front_mask(mean, tris, lmk68)
    regions = face_regions(mean, tris, lmk68, front)
    hidden = np.maximum.reduce([regions[k] for k in ("brows", "lash_line", "nostrils",
                                                     "mouth_line")])
    mean_albedo, albedo_basis = default_albedo_model(mean, tris, lmk68, front,
                                                     num_albedo_modes)
    arrays = {
        "mean_shape": mean.astype(np.float32),
        "id_basis": (id_basis_cm * CM_TO_DM).astype(np.float32),
        "exp_basis": (exp_basis_cm[order] * CM_TO_DM).astype(np.float32),
        "exp_names": np.array([exp_names[i] for i in order]),
        "exp_bounds": np.tile(np.array([[0.0, 1.0]], np.float32), (len(order), 1)),
        "mean_albedo": mean_albedo, "albedo_basis": albedo_basis,
        "albedo_provenance": PROVENANCE,
        "triangles": tris, "uv": uv_c, "tri_uv": tri_uv_c, "lmk68": lmk68,
        "front_mask": front, "jawline": jawline_ids(lmk68, len(mean)),
        "lmk68_output": output_landmark_ids(lmk68, len(mean)),
        "skin_mask": (front * (1.0 - hidden)).astype(np.float32),
        "name": "ict_facekit",
    }
    validate_arrays(arrays)
    return arrays


def load_ict_npz(path: str, num_albedo_modes: int = 80) -> dict:
    """Convert the shared ICT face-region npz (keys ``mean``, ``id_basis``,
    ``exp_basis``, ``exp_names``, ``tris``, ``tri_uv_idx``, ``uv``, ``lmk68``)
    into a recon_tf face-model dict.

    Raises:
      AssetMissingError: the file is absent (message says where to get it).
      FaceModelFormatError: a key is missing or malformed.
    """
    require_file(path, "ICT-FaceKit face-region npz", ICT_SOURCE)
    try:
        with np.load(path, allow_pickle=False) as d:
            src = {k: d[k] for k in d.files}
    except (ValueError, OSError, EOFError) as err:
        raise FaceModelFormatError(f"cannot read ICT npz {path}: {err}") from err
    needed = ["mean", "id_basis", "exp_basis", "tris", "tri_uv_idx", "uv", "lmk68"]
    missing = [k for k in needed if k not in src]
    if missing:
        raise FaceModelFormatError(f"ICT npz {path} lacks keys {missing}")
    names = [str(n) for n in src.get("exp_names", [f"exp{i}" for i in
                                                    range(len(src["exp_basis"]))])]
    return build_model(src["mean"], src["id_basis"], src["exp_basis"], names, src["tris"],
                       src["tri_uv_idx"], src["uv"], src["lmk68"], num_albedo_modes)


def convert_obj_dir(obj_dir: str, region_vertices: int = FACE_REGION_VERTICES,
                    num_albedo_modes: int = 80) -> dict:
    """Convert ICT-FaceKit's OBJ directory (``FaceXModel``) into a face-model dict.

    Reads ``generic_neutral_mesh.obj``, every ``identityNNN.obj`` present, the
    expression OBJs named in ``vertex_indices.json`` that are present, and the
    landmark ids from the json. Only the first ``region_vertices`` vertices
    and the faces inside them are kept.
    """
    neutral_path = require_file(os.path.join(obj_dir, "generic_neutral_mesh.obj"),
                                "ICT neutral mesh", ICT_SOURCE)
    index_path = require_file(os.path.join(obj_dir, "vertex_indices.json"),
                              "ICT vertex_indices.json", ICT_SOURCE)
    with open(index_path) as f:
        index = json.load(f)
    neutral = read_obj(neutral_path)
    keep = np.all(neutral.faces < region_vertices, axis=1)
    if neutral.face_uv is None:
        raise FaceModelFormatError(f"{neutral_path} has no UVs")
    tris, tri_uv = neutral.faces[keep], neutral.face_uv[keep]
    base = neutral.vertices[:region_vertices]

    def deltas(names: list[str]) -> np.ndarray:
        out = []
        for name in names:
            v = read_obj(os.path.join(obj_dir, name + ".obj")).vertices
            if len(v) != len(neutral.vertices):
                raise FaceModelFormatError(
                    f"{name}.obj has {len(v)} vertices, the neutral mesh {len(neutral.vertices)}")
            out.append(v[:region_vertices] - base)
        return np.stack(out) if out else np.zeros((0, region_vertices, 3))

    id_names = sorted(f[:-4] for f in os.listdir(obj_dir)
                      if f.startswith("identity") and f.endswith(".obj"))
    exp_names = [n for n in index["expressions"]
                 if os.path.exists(os.path.join(obj_dir, n + ".obj"))]
    if not id_names:
        raise FaceModelFormatError(f"no identityNNN.obj in {obj_dir}")
    lmk68 = np.asarray(index["idx_to_landmark_verts"], np.int64)
    return build_model(base, deltas(id_names), deltas(exp_names), exp_names, tris, tri_uv,
                       neutral.uv, lmk68, num_albedo_modes)
