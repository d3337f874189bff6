"""The CUDA-vs-CPU rasterizer check (benchmarks/cuda_rasterizer*.{py,cu}) works here.

The GPU run itself needs a GPU (README, "Rasterizer op"); here we check that the
standalone driver compiles with the op build's nvcc flags, and that the compare
step reads GPU outputs in the driver's format and reports a planted difference.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from recon_tf.render import build_op

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "cuda_rasterizer.py")


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:]
    return proc.stdout


@pytest.mark.slow
def test_driver_compiles_with_op_flags(tmp_path):
    nvcc = build_op.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found")
    arch = build_op.cuda_archs(nvcc)[-1]
    out = tmp_path / "check"
    kernels = os.path.join(ROOT, "recon_tf", "render", "kernels")
    subprocess.run([nvcc, "-std=c++17", "-O3", "-DGOOGLE_CUDA=1", "-DNDEBUG",
                    "--expt-relaxed-constexpr", f"-gencode=arch=compute_{arch},code=sm_{arch}",
                    "-I", kernels, "-x", "cu",
                    os.path.join(ROOT, "benchmarks", "cuda_rasterizer_main.cu"), "-x", "cu",
                    os.path.join(kernels, "rasterize_op_gpu.cu.cc"), "-o", str(out)],
                   check=True, cwd=ROOT)
    assert out.stat().st_size > 10000


@pytest.mark.slow
def test_compare_reports_agreement_and_a_planted_difference(tmp_path):
    cases, gpu = tmp_path / "cases", tmp_path / "gpu"
    _run("--mode=prepare", f"--dir={cases}")
    names = sorted(p.name[:-4] for p in cases.glob("*.bin"))
    assert "soup_61x47_b2" in names and "cap70k_224x224_b8" in names
    # Fake "GPU" outputs: the CPU op's own results in the driver's file format,
    # produced in a child process so that absl flags stay out of this one.
    gpu.mkdir()
    code = f"""
import sys, numpy as np
sys.argv = ["x"]
sys.path.insert(0, {os.path.join(ROOT, "benchmarks")!r})
import cuda_rasterizer as c
c.FLAGS(["x"])
clip, tris, h, w, gb, gd = c.read_case({str(cases / "soup_61x47_b2.bin")!r})
r = c.cpu_results(clip, tris, h, w, gb, gd)
r["ids"] = r["ids"].copy()
covered = np.argwhere(r["ids"] >= 0)[0]
r["ids"][tuple(covered)] = -1  # one planted mismatch
with open({str(gpu / "soup_61x47_b2.gpu")!r}, "wb") as f:
    for k, dt in (("ids", "<i4"), ("bary", "<f4"), ("depth", "<f4"), ("grad", "<f4")):
        f.write(np.ascontiguousarray(r[k], dt).tobytes())
"""
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    log = tmp_path / "gpu.log"
    log.write_text("soup_61x47_b2 TIMING forward_ms=0.5 backward_ms=0.25\n")
    out = _run("--mode=compare", f"--dir={cases}", f"--gpu_dir={gpu}", f"--gpu_log={log}",
               "--iters=1")
    row = next(line for line in out.splitlines() if line.startswith("| soup_61x47_b2"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert float(cells[2]) == pytest.approx(1.0 / (2 * 47 * 61), rel=1e-2)  # id mismatch
    assert float(cells[3]) == 0.0  # barycentrics agree where ids agree
    assert float(cells[7]) == pytest.approx(0.25)  # GPU forward ms per image (batch 2)
    assert "RESULT max_id_mismatch=" in out
    assert np.isfinite(float(cells[5]))
