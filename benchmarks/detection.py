"""Seconds per photo of the main job's front end, each option against the plain one in the
same process: MTCNN alone, + FaceMesh's second opinion, + the mirrored search, + the
rotated search (on the photos, and on a 640×480 photo without a face, where it runs),
+ the frame-filling face check; PFLD with upright crops and one refined pass against
eye-levelled crops and two.

    python benchmarks/detection.py [--photos=8] [--repeats=2]

Last line: ``RESULT detect_s=<x> mirror_ratio=<y> pfld_ms=<z> noface_rotated_ratio=<w>
frame_ratio=<v>`` (x: detection with the main job's defaults, s per photo; y: that over
detection without the mirrored search; z: PFLD with the defaults, ms per face; w: the
defaults over no rotated search on the photo without a face; v: the defaults over no
frame check, on the photos).
"""

from __future__ import annotations

import glob
import os
import time

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_integer("photos", 8, "Shared photos timed (images/faces, sorted).")
flags.DEFINE_integer("repeats", 2, "Passes over the photos; the fastest counts.")


def _best_seconds(fn, items: list, repeats: int) -> float:
    """The fastest of ``repeats`` passes of ``fn`` over ``items``, s per item."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return best / len(items)


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.assets import asset_path
    from recon_tf.nets.facemesh import FaceMesh
    from recon_tf.preprocess.detect import FaceDetector
    from recon_tf.preprocess.image_io import load_image
    from recon_tf.preprocess.landmarks import PFLDLandmarker

    paths = sorted(p for p in glob.glob(os.path.join(asset_path("images/faces"), "*"))
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))[:FLAGS.photos]
    images = [load_image(p).pixels for p in paths]
    mesh = FaceMesh()
    detectors = {"MTCNN alone": FaceDetector(),
                 "+ FaceMesh second opinion": FaceDetector(verifier=mesh.face_score),
                 "+ mirrored search": FaceDetector(verifier=mesh.face_score, mirror_pass=True),
                 "+ rotated search": FaceDetector(
                     verifier=mesh.face_score, mirror_pass=True,
                     rotations=(45.0, -45.0, 90.0, -90.0)),
                 "+ frame check (default)": FaceDetector(
                     verifier=mesh.face_score, mirror_pass=True,
                     rotations=(45.0, -45.0, 90.0, -90.0), framer=mesh.detect)}
    for detector in detectors.values():  # tracing and first calls
        detector.detect(images[0])
    rows = {name: _best_seconds(d.detect, images, FLAGS.repeats)
            for name, d in detectors.items()}
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    noface = {f"no face: {name}": _best_seconds(detectors[name].detect, [noise], FLAGS.repeats)
              for name in ("+ mirrored search", "+ frame check (default)")}
    faces = [(img, f) for img in images for f in detectors["MTCNN alone"].detect(img)]
    markers = {"PFLD upright, 1 refined pass": PFLDLandmarker(refine_passes=1, level=False),
               "PFLD levelled, 2 refined passes (default)": PFLDLandmarker()}
    pfld = {name: _best_seconds(lambda item, m=m: m(item[0], item[1].box, item[1].keypoints),
                                faces, FLAGS.repeats) for name, m in markers.items()}
    plain = rows["+ FaceMesh second opinion"]
    print(f"{len(images)} photos, {len(faces)} faces, best of {FLAGS.repeats}")
    print(f"{'stage':44s} {'s/photo':>8s} {'ratio':>6s}")
    for name, seconds in rows.items():
        print(f"{name:44s} {seconds:8.3f} {seconds / plain:6.2f}")
    for name, seconds in noface.items():
        print(f"{name:44s} {seconds:8.3f} "
              f"{seconds / noface['no face: + mirrored search']:6.2f}")
    base = pfld["PFLD upright, 1 refined pass"]
    print(f"{'stage':44s} {'ms/face':>8s} {'ratio':>6s}")
    for name, seconds in pfld.items():
        print(f"{name:44s} {1000 * seconds:8.1f} {seconds / base:6.2f}")
    default = rows["+ frame check (default)"]
    rotated = noface["no face: + frame check (default)"] / noface["no face: + mirrored search"]
    print(f"RESULT detect_s={default:.3f} mirror_ratio={default / plain:.2f} "
          f"pfld_ms={1000 * pfld['PFLD levelled, 2 refined passes (default)']:.1f} "
          f"noface_rotated_ratio={rotated:.2f} "
          f"frame_ratio={default / rows['+ rotated search']:.2f}")


if __name__ == "__main__":
    app.run(main)
