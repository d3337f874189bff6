"""Compile the rasterizer custom op against the installed TensorFlow.

Standalone on purpose: it imports only the standard library and TensorFlow, so
``setup.py`` can execute it by path before ``recon_tf`` is importable, and it
runs as a script::

    python recon_tf/render/build_op.py [--force] [--quiet]

Outputs (next to this file):

* ``_rasterize_op.so``: CPU kernels, built with ``g++`` (or ``$CXX``) and the
  flags of ``tf.sysconfig.get_compile_flags()`` / ``get_link_flags()`` plus
  ``-O3 -fPIC -shared -pthread``.
* ``_rasterize_op_gpu.so``: CPU and CUDA kernels, built only when ``nvcc`` is
  found (``$NVCC``, ``$CUDA_HOME/bin/nvcc``, ``PATH``, ``/usr/local/cuda/bin``)
  and the CUDA headers shipped in the TensorFlow wheel
  (``tensorflow/include/third_party/gpus/cuda/include``) exist. The CUDA
  runtime is linked statically (``libcudart_static.a``, its symbols kept
  private with ``--exclude-libs``), so the library needs only the NVIDIA
  driver at run time; it is loaded only when TensorFlow lists a GPU.

Environment variables:

* ``RECON_TF_SKIP_CUDA=1``: do not build the CUDA library.
* ``RECON_TF_REQUIRE_CUDA=1``: a missing ``nvcc`` or a failing CUDA build is an
  error (by default it prints a warning and the CPU library is still built).
* ``RECON_TF_CUDA_ARCHS``: comma-separated SM versions (default
  ``75,80,86,89,90``; CUDA 13 dropped sm_70, so 70 is used only with older
  ``nvcc``), each compiled to SASS, plus PTX for the newest.
* ``CXX``: host C++ compiler (default ``g++``).

A library is rebuilt only when a kernel source (``kernels/*.cc``,
``kernels/*.h``) or this file is newer than it. When the CUDA library is stale
but cannot be rebuilt it is deleted, so the loader never picks up kernels that
disagree with the sources.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
KERNEL_DIR = os.path.join(HERE, "kernels")
OP_SOURCE = os.path.join(KERNEL_DIR, "rasterize_op.cc")
CUDA_SOURCE = os.path.join(KERNEL_DIR, "rasterize_op_gpu.cu.cc")
CPU_LIBRARY = os.path.join(HERE, "_rasterize_op.so")
GPU_LIBRARY = os.path.join(HERE, "_rasterize_op_gpu.so")
BUILD_COMMAND = "python recon_tf/render/build_op.py"

DEFAULT_CUDA_ARCHS = ("75", "80", "86", "89", "90")


class BuildError(RuntimeError):
    """A compiler or linker command failed; the message holds its output."""


def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(f"[build_op] {message}", flush=True)


def _warn(message: str) -> None:
    print(f"[build_op] WARNING: {message}", file=sys.stderr, flush=True)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _sources() -> list[str]:
    files = glob.glob(os.path.join(KERNEL_DIR, "*.cc")) + glob.glob(
        os.path.join(KERNEL_DIR, "*.h"))
    return sorted(files) + [os.path.abspath(__file__)]


def is_stale(library: str) -> bool:
    """True when ``library`` is missing or older than a kernel source or this file."""
    if not os.path.exists(library):
        return True
    built = os.path.getmtime(library)
    return any(os.path.getmtime(path) > built for path in _sources())


def _run(cmd: list[str], verbose: bool) -> None:
    _log(verbose, " ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise BuildError(f"command failed with exit code {proc.returncode}:\n"
                         f"{' '.join(cmd)}\n{proc.stdout}")
    if verbose and proc.stdout.strip():
        print(proc.stdout, flush=True)


def _tf_flags() -> tuple[list[str], list[str], str]:
    """(compile flags, link flags, TF include dir) of the installed TensorFlow."""
    import tensorflow as tf

    compile_flags = list(tf.sysconfig.get_compile_flags())
    link_flags = list(tf.sysconfig.get_link_flags())
    return compile_flags, link_flags, tf.sysconfig.get_include()


def _cxx() -> str:
    return os.environ.get("CXX", "g++")


def _host_compile_flags(compile_flags: list[str]) -> list[str]:
    # The -Wno flags silence warnings raised inside TensorFlow's and Eigen's headers
    # (deprecated StrCat in TF's error helpers; GCC >= 12 on Eigen's alignas use).
    return (["-O3", "-fPIC", "-pthread", "-DNDEBUG", "-Wno-deprecated-declarations",
             "-Wno-interference-size", "-I" + KERNEL_DIR] + compile_flags)


def _finish(tmp_path: str, output: str) -> None:
    """Atomically moves a freshly linked library into place (mode 0755 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o755 & ~umask)
    os.replace(tmp_path, output)


def _link_atomically(command: list[str], output: str, verbose: bool) -> str:
    """Runs a link ``command`` writing to a temporary file, then moves it to ``output``."""
    tmp = _tmp_output(output)
    try:
        _run(command + ["-o", tmp], verbose)
        _finish(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return output


def _tmp_output(output: str) -> str:
    fd, path = tempfile.mkstemp(prefix=os.path.basename(output) + ".",
                                dir=os.path.dirname(output), suffix=".tmp")
    os.close(fd)
    return path


def build_cpu(output: str = CPU_LIBRARY, verbose: bool = False) -> str:
    """Compiles and links the CPU-only op library at ``output``; returns its path."""
    compile_flags, link_flags, _ = _tf_flags()
    return _link_atomically([_cxx(), "-shared", OP_SOURCE] + _host_compile_flags(compile_flags)
                            + link_flags, output, verbose)


def find_nvcc() -> str | None:
    """Path of ``nvcc`` or None."""
    candidates = [os.environ.get("NVCC", "")]
    if os.environ.get("CUDA_HOME"):
        candidates.append(os.path.join(os.environ["CUDA_HOME"], "bin", "nvcc"))
    candidates.append(shutil.which("nvcc") or "")
    candidates.append("/usr/local/cuda/bin/nvcc")
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _cuda_root(nvcc: str) -> str:
    """The toolkit directory of ``nvcc`` (resolving wrapper scripts via ``--dryrun``)."""
    proc = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    match = re.search(r"^#\$ TOP=(.+)$", proc.stdout, flags=re.MULTILINE)
    if match:
        return os.path.realpath(match.group(1).strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def nvcc_version(nvcc: str) -> tuple[int, int]:
    """(major, minor) release of ``nvcc``."""
    out = subprocess.run([nvcc, "--version"], stdout=subprocess.PIPE, text=True).stdout
    match = re.search(r"release (\d+)\.(\d+)", out)
    if not match:
        raise BuildError(f"cannot parse `{nvcc} --version` output:\n{out}")
    return int(match.group(1)), int(match.group(2))


def cuda_archs(nvcc: str) -> list[str]:
    """SM versions to compile for (``RECON_TF_CUDA_ARCHS`` or the default set)."""
    env = os.environ.get("RECON_TF_CUDA_ARCHS", "").strip()
    if env:
        return [a.strip() for a in env.split(",") if a.strip()]
    archs = list(DEFAULT_CUDA_ARCHS)
    if nvcc_version(nvcc)[0] < 13:
        archs.insert(0, "70")
    return archs


def compile_cuda_object(output: str, nvcc: str | None = None,
                        archs: list[str] | tuple[str, ...] | None = None,
                        verbose: bool = False) -> str:
    """Runs the nvcc step: compiles ``rasterize_op_gpu.cu.cc`` into object ``output``.

    ``archs`` are SM versions such as ``["80"]`` (default: :func:`cuda_archs`);
    each gets SASS, and the last also PTX for newer GPUs.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found")
    archs = list(archs) if archs else cuda_archs(nvcc)
    gencode = []
    for arch in archs:
        gencode.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
    gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
    _run([nvcc, "-std=c++17", "-c", "-x", "cu", CUDA_SOURCE, "-o", output, "-O3",
          "-Xcompiler", "-fPIC", "-DGOOGLE_CUDA=1", "-DNDEBUG", "--expt-relaxed-constexpr",
          "-I" + KERNEL_DIR] + gencode, verbose)
    return output


def _cudart_static(nvcc: str) -> str:
    root = _cuda_root(nvcc)
    patterns = [os.path.join(root, "lib64", "libcudart_static.a"),
                os.path.join(root, "lib", "libcudart_static.a"),
                os.path.join(root, "targets", "*", "lib", "libcudart_static.a")]
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise BuildError(f"libcudart_static.a not found under {root}")


def tf_cuda_include(tf_include: str) -> str | None:
    """The CUDA include dir shipped in the TensorFlow wheel, or None."""
    path = os.path.join(tf_include, "third_party", "gpus", "cuda", "include")
    return path if os.path.isfile(os.path.join(path, "cuda_runtime.h")) else None


def build_gpu(output: str = GPU_LIBRARY, nvcc: str | None = None, verbose: bool = False) -> str:
    """Compiles and links the CPU+CUDA op library at ``output``; returns its path."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found")
    compile_flags, link_flags, tf_include = _tf_flags()
    cuda_include = tf_cuda_include(tf_include)
    if cuda_include is None:
        raise BuildError(f"CUDA headers not found in the TensorFlow wheel ({tf_include}/"
                         "third_party/gpus/cuda/include)")
    cudart = _cudart_static(nvcc)
    with tempfile.TemporaryDirectory(prefix="recon_tf_build_") as workdir:
        cuda_obj = compile_cuda_object(os.path.join(workdir, "rasterize_op_gpu.cu.o"), nvcc,
                                       verbose=verbose)
        host_obj = os.path.join(workdir, "rasterize_op_gpu_host.o")
        _run([_cxx(), "-c", OP_SOURCE, "-o", host_obj, "-DGOOGLE_CUDA=1",
              "-I" + cuda_include] + _host_compile_flags(compile_flags), verbose)
        return _link_atomically(
            [_cxx(), "-shared", host_obj, cuda_obj, "-pthread", cudart,
             "-Wl,--exclude-libs," + os.path.basename(cudart), "-ldl", "-lrt"] + link_flags,
            output, verbose)


def build(verbose: bool = False, force: bool = False) -> dict[str, str | None]:
    """Builds the op libraries that are missing or older than their sources.

    Returns ``{"cpu": path, "gpu": path or None}``. Raises :class:`BuildError`
    when the CPU build fails, or the CUDA build fails while
    ``RECON_TF_REQUIRE_CUDA=1``.
    """
    result: dict[str, str | None] = {"cpu": CPU_LIBRARY, "gpu": None}
    if force or is_stale(CPU_LIBRARY):
        _log(verbose, f"building {CPU_LIBRARY}")
        build_cpu(CPU_LIBRARY, verbose)
    else:
        _log(verbose, f"{CPU_LIBRARY} is up to date")

    require = _env_flag("RECON_TF_REQUIRE_CUDA")
    stale_gpu = force or is_stale(GPU_LIBRARY)
    problem = None
    if _env_flag("RECON_TF_SKIP_CUDA"):
        problem = "RECON_TF_SKIP_CUDA=1: CUDA kernels not built"
    elif not stale_gpu:
        _log(verbose, f"{GPU_LIBRARY} is up to date")
        result["gpu"] = GPU_LIBRARY
    elif find_nvcc() is None:
        problem = "nvcc not found: CUDA kernels not built (the CPU kernels work everywhere)"
    else:
        _log(verbose, f"building {GPU_LIBRARY}")
        try:
            result["gpu"] = build_gpu(GPU_LIBRARY, verbose=verbose)
        except (BuildError, OSError) as err:
            problem = f"CUDA build failed, only the CPU kernels are available:\n{err}"

    if problem is not None:
        if require:
            raise BuildError(f"RECON_TF_REQUIRE_CUDA=1 but {problem}")
        if stale_gpu and os.path.exists(GPU_LIBRARY):
            os.remove(GPU_LIBRARY)
            problem += f"\nremoved the outdated {GPU_LIBRARY}"
        if os.path.exists(GPU_LIBRARY):
            result["gpu"] = GPU_LIBRARY
        if verbose or not problem.startswith("RECON_TF_SKIP_CUDA"):
            _warn(problem)
    return result


def main(argv: list[str]) -> int:
    force = "--force" in argv
    verbose = "--quiet" not in argv
    unknown = [a for a in argv if a not in ("--force", "--quiet")]
    if unknown:
        print(f"usage: {BUILD_COMMAND} [--force] [--quiet]; unknown {unknown}", file=sys.stderr)
        return 2
    try:
        result = build(verbose=verbose, force=force)
    except BuildError as err:
        print(f"[build_op] ERROR: {err}", file=sys.stderr)
        return 1
    print(f"[build_op] CPU library: {result['cpu']}")
    print(f"[build_op] GPU library: {result['gpu'] or 'not built'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
