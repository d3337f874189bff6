"""The rasterizer's CUDA kernels against its CPU kernel, and their GPU timings.

TensorFlow need not be installed where the GPU is: the CUDA kernels
(``recon_tf/render/kernels/rasterize_op_gpu.cu.cc``) are driven there by a
standalone program (``benchmarks/cuda_rasterizer_main.cu``), and the CPU op runs
here. Three steps:

1. ``python benchmarks/cuda_rasterizer.py --mode=prepare --dir=.gpu_check``
   writes the cases (``<case>.bin``: clip vertices, triangles, random output
   gradients) and the CPU op's results (``<case>.cpu.npz``).
2. On the GPU machine, from the repository root (the nvcc flags are the op
   build's, :func:`recon_tf.render.build_op.compile_cuda_object`)::

     nvcc -std=c++17 -O3 -DGOOGLE_CUDA=1 -DNDEBUG --expt-relaxed-constexpr \\
       -gencode=arch=compute_90,code=sm_90 -I recon_tf/render/kernels \\
       -x cu benchmarks/cuda_rasterizer_main.cu \\
       -x cu recon_tf/render/kernels/rasterize_op_gpu.cu.cc -o /tmp/check
     for c in .gpu_check/*.bin; do /tmp/check $c $OUT/$(basename $c .bin).gpu 50; done

3. ``python benchmarks/cuda_rasterizer.py --mode=compare --dir=.gpu_check
   --gpu_dir=<where the .gpu files landed> --gpu_log=<stdout of step 2>``
   prints, per case, the share of pixels whose triangle id differs, the
   largest barycentric and depth differences where ids agree, the gradient's
   relative error (CPU gradient op run on the GPU's ids, so that both see the
   same pixels), and the GPU ms per image of forward and backward next to the
   CPU op's, timed here in the same process.

Cases: the ICT-FaceKit face region (9,409 vertices) at 224² × 8 and 768² × 1,
a 70k-triangle ellipsoid cap at 224² × 8 (BFM-sized), and a random triangle
soup at 61 × 47 × 2 with vertices behind the camera, outside the depth range
and overlapping (ties and skips).
"""

from __future__ import annotations

import glob
import os
import re
import sys
import time

import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# Also defines --assets_dir, --iters (timed CPU iterations) and --seed.
from rasterizer import ellipsoid_cap, perspective_clip  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "prepare", ["prepare", "compare"], "Step to run (module docstring).")
flags.DEFINE_string("dir", ".gpu_check", "Folder of the cases and the CPU results.")
flags.DEFINE_string("gpu_dir", None, "Folder of the GPU outputs <case>.gpu (compare).")
flags.DEFINE_string("gpu_log", None, "The GPU driver's stdout, with its TIMING lines (compare).")

HEADER = np.dtype("<i8")


def make_cases(rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray, int, int]]:
    """Name → (clip float32 [B, V, 4], triangles int32 [T, 3], height, width)."""
    cases = {}
    ict = os.path.join(FLAGS.assets_dir, "face_models", "ict_facekit",
                       "ict_face_region_9409.npz")
    if os.path.exists(ict):
        with np.load(ict) as d:
            verts, tris = d["mean"], d["tris"].astype(np.int32)
        verts = np.asarray(verts, np.float32).reshape(-1, 3)
        verts = verts * (16.0 / np.ptp(verts[:, 0]))  # face width 16 cm
        cases["ict_224x224_b8"] = (perspective_clip(verts, 8, 1.0, rng), tris, 224, 224)
        cases["ict_768x768_b1"] = (perspective_clip(verts, 1, 1.0, rng), tris, 768, 768)
    verts, tris = ellipsoid_cap(188)
    cases["cap70k_224x224_b8"] = (perspective_clip(verts, 8, 1.0, rng), tris, 224, 224)
    n_v, n_t = 240, 400
    clip = rng.normal(0.0, 0.6, (2, n_v, 4)).astype(np.float32)
    clip[..., 3] = rng.uniform(-0.2, 1.5, (2, n_v))  # some w <= 0: skipped triangles
    clip[..., 2] = rng.uniform(-1.3, 1.3, (2, n_v)) * clip[..., 3]  # some z outside [-1, 1]
    soup = rng.integers(0, n_v, (n_t, 3)).astype(np.int32)
    soup[:40] = soup[40:80]  # duplicated triangles: equal depths, ties go to the lowest id
    cases["soup_61x47_b2"] = (clip, soup, 47, 61)
    return cases


def cpu_results(clip, tris, height, width, grad_bary, grad_depth, ids=None) -> dict:
    """The CPU op's forward outputs and its gradient op on ``ids`` (default: its own)."""
    import tensorflow as tf

    from recon_tf.render.rasterizer import _load_op_module, rasterize

    out_ids, bary, depth = rasterize(tf.constant(clip), tf.constant(tris), height, width)
    use_ids = out_ids if ids is None else tf.constant(ids)
    grad = _load_op_module().recon_tf_rasterize_grad(
        tf.constant(clip), tf.constant(tris), use_ids, tf.constant(grad_bary),
        tf.constant(grad_depth))
    return {"ids": out_ids.numpy(), "bary": bary.numpy(), "depth": depth.numpy(),
            "grad": grad.numpy()}


def time_cpu(clip, tris, height, width, grad_bary, grad_depth) -> tuple[float, float]:
    """Median CPU forward and backward ms for the whole batch."""
    import tensorflow as tf

    from recon_tf.render.rasterizer import _load_op_module, rasterize

    clip_t, tris_t = tf.constant(clip), tf.constant(tris)
    gb, gd = tf.constant(grad_bary), tf.constant(grad_depth)
    ids = rasterize(clip_t, tris_t, height, width)[0]
    fwd, bwd = [], []
    for _ in range(FLAGS.iters):
        t0 = time.perf_counter()
        rasterize(clip_t, tris_t, height, width)[0].numpy()
        fwd.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _load_op_module().recon_tf_rasterize_grad(clip_t, tris_t, ids, gb, gd).numpy()
        bwd.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(fwd)), 1e3 * float(np.median(bwd))


def write_case(path: str, clip, tris, height, width, grad_bary, grad_depth) -> None:
    with open(path, "wb") as f:
        f.write(np.array([clip.shape[0], clip.shape[1], tris.shape[0], height, width],
                         HEADER).tobytes())
        for arr, dtype in ((clip, "<f4"), (tris, "<i4"), (grad_bary, "<f4"),
                           (grad_depth, "<f4")):
            f.write(np.ascontiguousarray(arr, dtype).tobytes())


def read_case(path: str) -> tuple:
    with open(path, "rb") as f:
        b, nv, nt, h, w = np.frombuffer(f.read(40), HEADER)
        clip = np.frombuffer(f.read(4 * b * nv * 4), "<f4").reshape(b, nv, 4)
        tris = np.frombuffer(f.read(4 * nt * 3), "<i4").reshape(nt, 3)
        gb = np.frombuffer(f.read(4 * b * h * w * 3), "<f4").reshape(b, h, w, 3)
        gd = np.frombuffer(f.read(4 * b * h * w), "<f4").reshape(b, h, w)
    return clip, tris, int(h), int(w), gb, gd


def read_gpu(path: str, clip: np.ndarray, height: int, width: int) -> dict:
    b, nv = clip.shape[:2]
    p = b * height * width
    raw = open(path, "rb").read()
    ids = np.frombuffer(raw, "<i4", p, 0).reshape(b, height, width)
    bary = np.frombuffer(raw, "<f4", 3 * p, 4 * p).reshape(b, height, width, 3)
    depth = np.frombuffer(raw, "<f4", p, 16 * p).reshape(b, height, width)
    grad = np.frombuffer(raw, "<f4", b * nv * 4, 20 * p).reshape(b, nv, 4)
    return {"ids": ids, "bary": bary, "depth": depth, "grad": grad}


def prepare() -> None:
    rng = np.random.default_rng(FLAGS.seed)
    os.makedirs(FLAGS.dir, exist_ok=True)
    for name, (clip, tris, h, w) in make_cases(rng).items():
        gb = rng.normal(0.0, 1.0, (clip.shape[0], h, w, 3)).astype(np.float32)
        gd = rng.normal(0.0, 1.0, (clip.shape[0], h, w)).astype(np.float32)
        write_case(os.path.join(FLAGS.dir, f"{name}.bin"), clip, tris, h, w, gb, gd)
        print(f"wrote {name}: batch {clip.shape[0]}, {clip.shape[1]} vertices, "
              f"{tris.shape[0]} triangles, {h}x{w}")


def gpu_timings(log: str | None) -> dict[str, tuple[float, float]]:
    """Case name → (forward ms, backward ms) from the driver's log lines
    ``<case> TIMING forward_ms=… backward_ms=…``."""
    out = {}
    if log and os.path.exists(log):
        for line in open(log):
            m = re.match(r"(\S+) TIMING forward_ms=([\d.]+) backward_ms=([\d.]+)", line.strip())
            if m:
                out[m[1]] = (float(m[2]), float(m[3]))
    return out


def compare() -> None:
    timings = gpu_timings(FLAGS.gpu_log)
    rows = []
    for case in sorted(glob.glob(os.path.join(FLAGS.dir, "*.bin"))):
        name = os.path.basename(case)[:-4]
        gpu_path = os.path.join(FLAGS.gpu_dir, f"{name}.gpu")
        if not os.path.exists(gpu_path):
            print(f"{name}: no GPU output at {gpu_path}")
            continue
        clip, tris, h, w, gb, gd = read_case(case)
        gpu = read_gpu(gpu_path, clip, h, w)
        cpu = cpu_results(clip, tris, h, w, gb, gd)
        on_gpu_ids = cpu_results(clip, tris, h, w, gb, gd, ids=gpu["ids"])["grad"]
        same = cpu["ids"] == gpu["ids"]
        covered = same & (cpu["ids"] >= 0)
        bary_err = float(np.abs(cpu["bary"] - gpu["bary"])[covered].max(initial=0.0))
        depth_err = float(np.abs(cpu["depth"] - gpu["depth"])[covered].max(initial=0.0))
        scale = float(np.abs(on_gpu_ids).max()) or 1.0
        grad_err = float(np.abs(on_gpu_ids - gpu["grad"]).max()) / scale
        cpu_fwd, cpu_bwd = time_cpu(clip, tris, h, w, gb, gd)
        g_fwd, g_bwd = timings.get(name, (float("nan"), float("nan")))
        b = clip.shape[0]
        rows.append((name, int((cpu["ids"] >= 0).sum()), 1.0 - float(same.mean()), bary_err,
                     depth_err, grad_err, cpu_fwd / b, g_fwd / b, cpu_bwd / b, g_bwd / b))
    print("| case | covered px | id mismatch | max Δbary | max Δdepth | grad rel. err | "
          "CPU fwd ms/img | GPU fwd ms/img | CPU bwd ms/img | GPU bwd ms/img |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.2e} | {r[3]:.2e} | {r[4]:.2e} | {r[5]:.2e} | "
              f"{r[6]:.3f} | {r[7]:.4f} | {r[8]:.3f} | {r[9]:.4f} |")
    if rows:
        worst = max(rows, key=lambda r: r[2])
        print(f"RESULT max_id_mismatch={worst[2]:.2e} max_grad_rel_err="
              f"{max(r[5] for r in rows):.2e}")


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.mode == "prepare":
        prepare()
    else:
        if not FLAGS.gpu_dir:
            raise app.UsageError("--gpu_dir is required with --mode=compare")
        compare()


if __name__ == "__main__":
    app.run(main)
