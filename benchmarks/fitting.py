"""Seconds per photo of the main job's fitting path (detection + landmarks + fit).

    python benchmarks/fitting.py --photos=4

Start-up (model loading, the FaceMesh correspondence, TF tracing) is timed
apart: one warm-up photo is reconstructed first, then ``--photos`` photos from
``<assets>/images/faces`` are timed, per stage (prepare = decode, MTCNN, PFLD,
FaceMesh, alignment, skin mask; fit; write = outputs), once one photo at a time
and once as one batch. The fit schedule and weights are the main job's
defaults (flags of tools/reconstruct.py apply). Last line:
``RESULT fit_s_per_photo=<x> fine_fit_s_per_photo=<y>`` (one photo at a time; x: every
coarse stage, y: the fine stage's per-photo fitting, timed apart).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))

import reconstruct  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("photos", 4, "Photos timed.")


def _time_photos(recon, paths: list[str], out: str, batch: int) -> dict:
    from recon_tf.photo_fine import fine_details, write_fine

    totals = {"prepare": 0.0, "fit": 0.0, "fine": 0.0, "write": 0.0}
    for start in range(0, len(paths), batch):
        t0 = time.perf_counter()
        faces = [recon.prepare(p) for p in paths[start:start + batch]]
        faces = [f for f in faces if not hasattr(f, "reason")]
        t1 = time.perf_counter()
        result = recon.fit(faces)
        t2 = time.perf_counter()
        fine = fine_details(recon, faces, result.coeffs)[0] if recon.fine else None
        t3 = time.perf_counter()
        for i, f in enumerate(faces):
            recon.write(f, result.coeffs[i], os.path.join(out, f"{start + i}"))
            if fine is not None:
                write_fine(recon, f, result.coeffs[i], fine, i, os.path.join(out, f"{start + i}"))
        totals["prepare"] += t1 - t0
        totals["fit"] += t2 - t1
        totals["fine"] += t3 - t2
        totals["write"] += time.perf_counter() - t3
    return {k: v / len(paths) for k, v in totals.items()}


def main(argv: list[str]) -> None:
    del argv
    from recon_tf.assets import asset_path

    folder = asset_path("images/faces")
    names = ["obama.jpg", "biden.jpg", "Paul.jpeg", "Chris.jpeg", "Luciano.png", "Bryan.png",
             "obama2.jpg", "Paul2.jpeg"]
    paths = [os.path.join(folder, n) for n in names[:FLAGS.photos + 1]]
    t0 = time.perf_counter()
    recon = reconstruct.build_reconstructor()
    t_load = time.perf_counter() - t0
    out = tempfile.mkdtemp(prefix="bench_fit_")
    t0 = time.perf_counter()
    _time_photos(recon, paths[:1], out, 1)
    t_warm = time.perf_counter() - t0
    timed = paths[1:]
    single = _time_photos(recon, timed, out, 1)
    batched = _time_photos(recon, timed, out, len(timed))
    print(f"start-up: load {t_load:.1f} s, first photo (tracing) {t_warm:.1f} s")
    print(f"{'mode':<18}{'prepare s':>10}{'fit s':>8}{'fine s':>8}{'write s':>9}"
          f"{'total s/photo':>15}")
    for label, t in (("one at a time", single), (f"batch of {len(timed)}", batched)):
        print(f"{label:<18}{t['prepare']:>10.2f}{t['fit']:>8.2f}{t['fine']:>8.2f}"
              f"{t['write']:>9.2f}{sum(t.values()):>15.2f}")
    print(f"batched / single fit time ratio: {batched['fit'] / single['fit']:.2f}")
    coarse = sum(v for k, v in single.items() if k != "fine")
    print(f"RESULT fit_s_per_photo={coarse:.2f} fine_fit_s_per_photo={single['fine']:.2f}")


if __name__ == "__main__":
    app.run(main)
