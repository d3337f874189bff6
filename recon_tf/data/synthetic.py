"""A seeded synthetic ground-truth set: faces with known shape, detail and albedo.

Real photos give no geometry or detail truth; this set does. Every example is
rendered from the face model with random identity, expression, albedo, pose
and SH light, plus procedural fine detail in UV, over a random background:

* displacement map D (decimetres, + outwards): wrinkle strokes — Gaussian
  grooves placed relative to the model's landmarks (forehead lines above the
  brows, crow's feet at the outer eye corners, nasolabial folds from the nose
  wings to the mouth corners, a few anywhere) — plus pore-scale band-pass
  noise;
* detailed albedo map: the model's albedo in UV × (1 + band-pass noise)
  with a few darker freckles;
* shading per pixel (Eq. 5) with detail normals from D
  (:func:`recon_tf.render.detail.displace`), rendered at ``supersample`` ×
  the resolution and area-downsampled (anti-aliased edges);
* background: a smooth random colour field with noise and random discs;
* optionally (``SyntheticConfig.out_of_model`` > 0) a smooth shape
  deformation not drawn from the model's prior, half of it outside the
  identity basis's span (:func:`out_of_model_offset`): a stand-in for faces
  of another face model, which a fit can only approximate.

Examples use the TFRecord schema of :mod:`recon_tf.data.tfrecord` (so the
training pipeline reads them like preprocessed photos) with extras
``coeffs`` [total], ``vertices`` [N, 3] (model-space shape S), ``displacement``
[S_uv, S_uv, 1] and ``albedo_map`` [S_uv, S_uv, 3]. Example ``i`` of seed
``s`` depends only on ``(s, i)``: sets are reproducible and shardable.
"""

from __future__ import annotations

import dataclasses
import os

import cv2
import numpy as np
import tensorflow as tf

from recon_tf.camera import PIXEL_CENTER, Camera
from recon_tf.data.tfrecord import encode_example
from recon_tf.face_model import FaceModel
from recon_tf.render.detail import displace, render_detailed
from recon_tf.render.renderer import render_mesh
from recon_tf.render.uv import UVLayout, attributes_to_uv, rasterize_uv_layout

EXTRA_NAMES = ("coeffs", "vertices", "displacement", "albedo_map")


def shard_path(output: str, shard: int, num_shards: int) -> str:
    """Path of one shard file of a synthetic set written by ``tools/make_synthetic.py``."""
    return os.path.join(output, f"synthetic-{shard:05d}-of-{num_shards:05d}.tfrecord")


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Sampling ranges of the synthetic set (all angles in radians, lengths in dm).

    ``out_of_model``: RMS over the front face of the out-of-model deformation
    (:func:`out_of_model_offset`; 0: off, the default), built from Gaussian
    bumps of width ``out_of_model_sigma``.
    """

    image_size: int = 224
    uv_size: int = 128
    supersample: int = 2
    identity_std: float = 0.8
    albedo_std: float = 1.0
    max_active_expressions: int = 4
    expression_max: float = 0.7
    yaw: float = 0.6
    pitch: float = 0.25
    roll: float = 0.15
    translation_xy: float = 0.08
    translation_z: float = 0.5
    wrinkle_depth: tuple[float, float] = (0.005, 0.015)
    wrinkle_width: tuple[float, float] = (0.006, 0.015)
    pore_depth: float = 0.0004
    albedo_detail: float = 0.02
    out_of_model: float = 0.0
    out_of_model_sigma: float = 0.25

    def to_json(self) -> dict:
        """The settings for a set's manifest; without an out-of-model deformation its
        fields are left out, so such sets match the manifests written before it existed."""
        values = dataclasses.asdict(self)
        if not self.out_of_model:
            values.pop("out_of_model")
            values.pop("out_of_model_sigma")
        return values


def _bandpass_noise(rng: np.random.Generator, size: int, sigma_lo: float, sigma_hi: float
                    ) -> np.ndarray:
    """Unit-RMS band-pass noise [size, size] (difference of Gaussians)."""
    white = rng.normal(size=(size, size)).astype(np.float32)
    band = (cv2.GaussianBlur(white, (0, 0), sigma_lo) - cv2.GaussianBlur(white, (0, 0), sigma_hi))
    return band / max(float(np.sqrt(np.mean(band ** 2))), 1e-8)


def _stroke(grid_u: np.ndarray, grid_v: np.ndarray, start: np.ndarray, end: np.ndarray,
            width: float) -> np.ndarray:
    """A groove profile in [0, 1] along the segment start→end (UV units)."""
    d = end - start
    length = max(float(np.linalg.norm(d)), 1e-6)
    t_dir = d / length
    rel_u, rel_v = grid_u - start[0], grid_v - start[1]
    along = rel_u * t_dir[0] + rel_v * t_dir[1]
    across = -rel_u * t_dir[1] + rel_v * t_dir[0]
    s = np.clip(along / length, 0.0, 1.0)
    taper = np.sin(np.pi * s) * ((along >= 0) & (along <= length))
    return taper * np.exp(-across ** 2 / (2 * width ** 2))


def procedural_displacement(rng: np.random.Generator, size: int, landmark_uv: np.ndarray,
                            config: SyntheticConfig) -> np.ndarray:
    """Wrinkles and pores in UV, float32 [size, size] (decimetres, grooves negative).

    Args:
      landmark_uv: float [68, 2], UVs of the model's 68 landmarks (v up).
    """
    coords = (np.arange(size) + 0.5) / size
    gu, gv = np.meshgrid(coords, 1.0 - coords)
    lm = np.asarray(landmark_uv, np.float64)
    eye_dist = float(np.linalg.norm(lm[45] - lm[36])) or 0.3
    brow = lm[17:27]
    strokes = []
    for k in range(rng.integers(1, 5)):  # forehead lines above the brows
        lift = eye_dist * (0.25 + 0.12 * k + rng.uniform(0, 0.05))
        strokes.append((brow[1] + [0, lift], brow[8] + [0, lift]))
    for corner, sign in ((lm[36], -1.0), (lm[45], 1.0)):  # crow's feet
        for _ in range(rng.integers(0, 4)):
            ang = rng.uniform(-0.6, 0.6)
            direction = np.array([sign * np.cos(ang), np.sin(ang)]) * eye_dist * 0.25
            strokes.append((corner + direction * 0.3, corner + direction * 1.3))
    if rng.uniform() < 0.8:  # nasolabial folds
        for wing, mouth in ((lm[31], lm[48]), (lm[35], lm[54])):
            strokes.append((wing, mouth + (mouth - wing) * 0.2))
    for _ in range(rng.integers(0, 4)):  # anywhere on the face
        a = lm[rng.integers(0, 68)] + rng.normal(scale=0.03, size=2)
        strokes.append((a, a + rng.normal(scale=eye_dist * 0.2, size=2)))
    disp = np.zeros((size, size), np.float64)
    for a, b in strokes:
        depth = rng.uniform(*config.wrinkle_depth)
        width = rng.uniform(*config.wrinkle_width)
        disp -= depth * _stroke(gu, gv, np.asarray(a), np.asarray(b), width)
    disp += config.pore_depth * _bandpass_noise(rng, size, 0.7, 2.0)
    return disp.astype(np.float32)


def procedural_albedo_detail(rng: np.random.Generator, size: int, config: SyntheticConfig
                             ) -> np.ndarray:
    """Multiplicative high-frequency albedo factor, float32 [size, size, 1], around 1."""
    factor = 1.0 + config.albedo_detail * _bandpass_noise(rng, size, 0.8, 3.0)
    coords = np.arange(size) + 0.5
    gx, gy = np.meshgrid(coords, coords)
    for _ in range(rng.integers(0, 15)):  # freckles
        cx, cy = rng.uniform(0, size, 2)
        r = rng.uniform(0.6, 1.6) * size / 128
        factor -= rng.uniform(0.05, 0.2) * np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * r * r))
    return np.clip(factor, 0.5, 1.5)[..., None].astype(np.float32)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random background, float32 [size, size, 3] in [0, 1]."""
    grid = rng.uniform(0.05, 0.95, size=(4, 4, 3)).astype(np.float32)
    bg = cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
    bg += 0.04 * rng.normal(size=(size, size, 3)).astype(np.float32)
    for _ in range(rng.integers(0, 6)):
        centre = tuple(int(x) for x in rng.integers(0, size, 2))
        radius = int(rng.integers(size // 20, size // 4))
        cv2.circle(bg, centre, radius, tuple(float(c) for c in rng.uniform(0, 1, 3)), -1)
    return np.clip(bg, 0.0, 1.0)


def sample_coeffs(rng: np.random.Generator, face_model: FaceModel, config: SyntheticConfig
                  ) -> np.ndarray:
    """One random coefficient vector, float32 [layout.total].

    Expressions: models with bounded weights (``FaceModel.exp_bounds``, e.g.
    ICT's blendshapes in [0, 1]) get up to ``max_active_expressions`` weights
    in [low, low + expression_max · (high − low)], the rest at ``low``; PCA
    expression models (no bounds) get β ~ N(0, 0.5²).
    """
    lay = face_model.layout
    if face_model.exp_bounds is not None:
        low, high = face_model.exp_bounds.numpy().astype(np.float64).T
        beta = low.copy()
        active = rng.choice(lay.exp_dim, size=rng.integers(0, config.max_active_expressions + 1),
                            replace=False)
        beta[active] = rng.uniform(low[active], low[active] + config.expression_max
                                   * (high[active] - low[active]))
    else:
        beta = rng.normal(scale=0.5, size=lay.exp_dim)
    light = np.zeros((3, 9))
    light[:, 0] = rng.uniform(-0.2, 0.3) + rng.normal(scale=0.03, size=3)
    light[:, 1:4] = rng.normal(size=3) * rng.uniform(0.0, 0.5) + rng.normal(scale=0.02,
                                                                              size=(3, 3))
    light[:, 4:] = rng.normal(scale=0.05, size=(1, 5))
    parts = [rng.normal(scale=config.identity_std, size=lay.id_dim), beta,
             rng.normal(scale=config.albedo_std, size=lay.tex_dim),
             [rng.uniform(-config.pitch, config.pitch), rng.uniform(-config.yaw, config.yaw),
              rng.uniform(-config.roll, config.roll)],
             [rng.uniform(-config.translation_xy, config.translation_xy),
              rng.uniform(-config.translation_xy, config.translation_xy),
              rng.uniform(-config.translation_z, config.translation_z)],
             light.reshape(-1)]
    return np.concatenate([np.asarray(p, np.float64).ravel() for p in parts]).astype(np.float32)


def out_of_model_offset(rng: np.random.Generator, face_model: FaceModel, rms: float,
                        sigma: float = 0.25, bumps: int = 8) -> np.ndarray:
    """A smooth shape deformation not drawn from the model's prior, float32 [N, 3] (dm).

    ``bumps`` Gaussian bumps (width ``sigma`` dm; 0.25 dm = 25 mm: nose, cheek,
    chin or brow-sized changes) centred on random front-face vertices, each
    moving its region along a random 3D direction; the sum loses its mean
    translation over the front face and is scaled to ``rms`` dm RMS there
    (``front_mask`` > 0.5, or all vertices). For ICT-FaceKit about half of it
    (RMS 0.40–0.55 at σ = 25 mm) lies outside the identity basis's span, so a
    fit can only approximate it, as with a face of another face model. (The
    part outside the span alone is not smooth: removing the span's part leaves
    a crumpled surface, so the whole deformation is kept.)
    """
    mean = np.asarray(face_model.arrays["mean_shape"], np.float64)
    front = face_model.arrays.get("front_mask")
    front = np.ones(len(mean), bool) if front is None else np.asarray(front) > 0.5
    centres = mean[rng.choice(np.flatnonzero(front), size=bumps, replace=False)]
    directions = rng.normal(size=(bumps, 3))
    dist2 = ((mean[:, None] - centres[None]) ** 2).sum(-1)
    offset = np.exp(-0.5 * dist2 / sigma ** 2) @ directions
    offset -= offset[front].mean(axis=0)
    offset *= rms / max(float(np.sqrt((offset[front] ** 2).sum(-1).mean())), 1e-12)
    return offset.astype(np.float32)


def _fill_holes(background: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Paint eyes and the inner mouth (holes of the face mesh) over the background."""
    out = background.copy()
    for ids, colour in ((range(36, 42), (0.12, 0.09, 0.08)), (range(42, 48), (0.12, 0.09, 0.08)),
                        (range(60, 68), (0.25, 0.06, 0.06))):
        poly = np.round(landmarks[list(ids)]).astype(np.int32)
        cv2.fillPoly(out, [poly], colour)
    return out


class SyntheticRenderer:
    """Renders batches of synthetic examples (holds the UV layout and camera)."""

    def __init__(self, face_model: FaceModel, config: SyntheticConfig = SyntheticConfig()):
        self.face_model = face_model
        self.config = config
        self.camera = Camera.deep3d(config.image_size * config.supersample)
        self.layout: UVLayout = rasterize_uv_layout(face_model, config.uv_size)
        self.landmark_uv = face_model.vertex_uv()[face_model.arrays["lmk68"]]

    def sample(self, seed: int, index: int) -> dict:
        """Random inputs of example ``index`` (numpy): coeffs, displacement, detail,
        background and, with ``config.out_of_model`` > 0, ``shape_offset`` [N, 3] (dm;
        drawn from its own stream, so the rest of the example does not change)."""
        rng = np.random.default_rng([seed, index])
        cfg = self.config
        sample = {
            "coeffs": sample_coeffs(rng, self.face_model, cfg),
            "displacement": procedural_displacement(rng, cfg.uv_size, self.landmark_uv, cfg),
            "albedo_detail": procedural_albedo_detail(rng, cfg.uv_size, cfg),
            "background": random_background(rng, cfg.image_size),
        }
        if cfg.out_of_model > 0:
            sample["shape_offset"] = out_of_model_offset(
                np.random.default_rng([seed, index, 1]), self.face_model, cfg.out_of_model,
                cfg.out_of_model_sigma)
        return sample

    def render(self, samples: list[dict]) -> list[dict]:
        """Render sampled inputs; returns per example image (uint8 [H, W, 3]),
        mask (uint8 [H, W]), landmarks ([68, 2], OpenCV pixel convention) and
        the truth extras."""
        fm, cfg = self.face_model, self.config
        coeffs = tf.constant(np.stack([s["coeffs"] for s in samples]))
        c = fm.layout.split(coeffs)
        shape = fm.shape(c.identity, c.expression)
        zero = np.zeros(shape.shape[1:], np.float32)
        offsets = [s.get("shape_offset", zero) for s in samples]
        if any("shape_offset" in s for s in samples):
            shape += tf.constant(np.stack(offsets))
        rendering = render_mesh(fm, shape, fm.albedo(c.albedo), c.angles, c.translation,
                                c.light, self.camera)
        normals = fm.vertex_normals(shape)
        maps = attributes_to_uv(tf.concat([shape, normals, rendering.albedo], -1), self.layout)
        disp = tf.constant(np.stack([s["displacement"] for s in samples]))[..., None]
        _, detail_normals = displace(maps[..., :3], maps[..., 3:6], disp, self.layout.mask)
        detail = tf.constant(np.stack([s["albedo_detail"] for s in samples]))
        albedo_map = tf.clip_by_value(maps[..., 6:9] * detail, 0.0, 1.0) * self.layout.mask
        image = render_detailed(fm, rendering, albedo_map, detail_normals, c.angles, c.light)
        size = (cfg.image_size, cfg.image_size)
        out = []
        for i, s in enumerate(samples):
            face = cv2.resize(image[i].numpy(), size, interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(rendering.mask[i].numpy(), size, interpolation=cv2.INTER_AREA)
            alpha = alpha[..., None]
            lmk = rendering.landmarks[i].numpy() / cfg.supersample - PIXEL_CENTER
            rgb = np.clip(alpha * face + (1 - alpha) * _fill_holes(s["background"], lmk), 0, 1)
            out.append({
                "image": (rgb * 255 + 0.5).astype(np.uint8),
                "mask": ((alpha[..., 0] > 0.5) * 255).astype(np.uint8),
                "landmarks": lmk.astype(np.float32),
                "coeffs": s["coeffs"], "vertices": shape[i].numpy(),
                "shape_offset": offsets[i],
                "displacement": (disp[i] * self.layout.mask[0]).numpy(),
                "albedo_map": albedo_map[i].numpy(),
            })
        return out

    def encode(self, seed: int, index: int, rendered: dict) -> bytes:
        """Serialize one rendered example with its truth extras."""
        return encode_example(
            rendered["image"], rendered["landmarks"], rendered["mask"],
            source_path=f"synthetic/seed{seed}/{index:08d}", transform=np.eye(2, 3),
            subject=f"synthetic-{seed}-{index}",
            extras={k: rendered[k] for k in EXTRA_NAMES})
