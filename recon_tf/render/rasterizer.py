"""Differentiable triangle rasterizer (TensorFlow custom op, CPU and CUDA kernels).

Conventions (shared with :mod:`recon_tf.render.reference`):

* ``clip_vertices`` are homogeneous OpenGL clip coordinates ``(x, y, z, w)``,
  float32 ``[B, V, 4]``. A point is inside the view volume when
  ``-w <= x, y, z <= w``. NDC is ``(x, y, z) / w``: NDC x = -1 is the left
  image border and +1 the right one; NDC y = +1 is the *top* border (row 0)
  and -1 the bottom one.
* ``triangles`` are int32 ``[T, 3]`` vertex indices in ``[0, V)``, shared by all
  images of the batch.
* Pixel ``(row, col)`` is sampled at its centre, i.e. at screen position
  ``(col + 0.5, row + 0.5)`` = NDC ``(2 (col + 0.5) / W - 1, 1 - 2 (row + 0.5) / H)``.
* Triangles are double-sided (no back-face culling). A triangle is skipped
  entirely when any of its vertices has ``w <= 1e-6`` (at or behind the camera
  plane; there is no near-plane clipping) or when its screen-space area is
  zero. Fragments are kept only where ``z_ndc = z / w`` lies in ``[-1, 1]``;
  the fragment with the smallest ``z_ndc`` wins, ties go to the lowest
  triangle id. A pixel centre exactly on a shared edge belongs to both
  triangles (inclusive test, no cracks).

Size limits: ``1 <= height, width <= MAX_IMAGE_SIDE`` (8192) and
``batch * height * width <= MAX_TOTAL_PIXELS`` (2**26 = 67,108,864).

The op library ``_rasterize_op.so`` (CPU) or ``_rasterize_op_gpu.so`` (CPU and
CUDA, used when TensorFlow lists a GPU and the file exists) is loaded on first
use and built on the fly with :mod:`recon_tf.render.build_op` when missing.
"""

from __future__ import annotations

import numbers
import os
import threading
import warnings

import tensorflow as tf

MAX_IMAGE_SIDE = 8192
MAX_TOTAL_PIXELS = 2**26

_HERE = os.path.dirname(os.path.abspath(__file__))
_lock = threading.Lock()
_module = None
_module_path = None


@tf.autograph.experimental.do_not_convert  # plain Python, may first run inside a tf.function
def _load_op_module():
    """Loads (building it if missing) the op library; returns the op module."""
    global _module, _module_path
    if _module is not None:
        return _module
    with _lock:
        if _module is not None:
            return _module
        from recon_tf.render import build_op

        if not os.path.exists(build_op.CPU_LIBRARY):
            try:
                build_op.build(verbose=False)
            except (build_op.BuildError, OSError) as err:
                raise RuntimeError(
                    f"the rasterizer op library {build_op.CPU_LIBRARY} is missing and building "
                    f"it failed; run `{build_op.BUILD_COMMAND}` from the repository root (or "
                    f"`pip install --no-build-isolation -e .`) and read its output.\n{err}"
                ) from err
        elif build_op.is_stale(build_op.CPU_LIBRARY):
            warnings.warn(f"{build_op.CPU_LIBRARY} is older than its sources; rebuild with "
                          f"`{build_op.BUILD_COMMAND}`", stacklevel=3)
        path = build_op.CPU_LIBRARY
        if tf.config.list_physical_devices("GPU"):
            if os.path.exists(build_op.GPU_LIBRARY):
                path = build_op.GPU_LIBRARY
            else:
                warnings.warn(f"a GPU is present but {build_op.GPU_LIBRARY} was not built "
                              "(nvcc missing?); rasterizing on the CPU", stacklevel=3)
        _module = tf.load_op_library(path)
        _module_path = path
    return _module


def op_library_path() -> str:
    """Path of the op library in use (loading, or building, it if needed)."""
    _load_op_module()
    return _module_path


def _static_dim(tensor: tf.Tensor, axis: int) -> int | None:
    return tensor.shape[axis] if tensor.shape.rank is not None else None


def _check_image_size(height: int, width: int, batch: int | None) -> tuple[int, int]:
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{name} must be a Python int, got {value!r}")
        if value < 1 or value > MAX_IMAGE_SIDE:
            raise ValueError(f"{name} must be in [1, {MAX_IMAGE_SIDE}], got {value}")
    height, width = int(height), int(width)
    if batch is not None and batch * height * width > MAX_TOTAL_PIXELS:
        raise ValueError(
            f"batch * height * width = {batch} * {height} * {width} = {batch * height * width} "
            f"exceeds the limit of {MAX_TOTAL_PIXELS} pixels per call; split the batch")
    return height, width


def _as_tensor(value, dtype: tf.DType, what: str) -> tf.Tensor:
    """Converts ``value``; arrays and tensors must already have ``dtype`` (no silent casts)."""
    if hasattr(value, "dtype"):
        tensor = tf.convert_to_tensor(value)
    else:
        tensor = tf.convert_to_tensor(value, dtype_hint=dtype)
    if tensor.dtype != dtype:
        raise ValueError(f"{what}, got dtype {tensor.dtype.name}")
    return tensor


def _check_geometry(clip_vertices, triangles) -> tuple[tf.Tensor, tf.Tensor]:
    clip = _as_tensor(clip_vertices, tf.float32,
                      "clip_vertices must be float32 [batch, num_vertices, 4]")
    tris = _as_tensor(triangles, tf.int32, "triangles must be int32 [num_triangles, 3]")
    if clip.shape.rank != 3 or clip.shape[2] not in (None, 4):
        raise ValueError(f"clip_vertices must have shape [batch, num_vertices, 4], "
                         f"got {clip.shape}")
    if tris.shape.rank != 2 or tris.shape[1] not in (None, 3):
        raise ValueError(f"triangles must have shape [num_triangles, 3], got {tris.shape}")
    return clip, tris


def rasterize(clip_vertices: tf.Tensor, triangles: tf.Tensor, height: int,
              width: int) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Rasterizes a batch of triangle meshes given in clip space.

    Args:
      clip_vertices: float32 ``[B, V, 4]`` homogeneous OpenGL clip coordinates
        (see the module docstring for the conventions).
      triangles: int32 ``[T, 3]`` vertex indices in ``[0, V)``, shared by the batch.
        On the CPU an out-of-range index raises ``InvalidArgumentError`` at run
        time; the CUDA kernel skips such triangles.
      height: image height in pixels, Python int in ``[1, 8192]``.
      width: image width in pixels, Python int in ``[1, 8192]``.

    Returns:
      ``(triangle_ids, barycentrics, z_ndc)``:

      * ``triangle_ids``: int32 ``[B, H, W]``, index of the visible triangle,
        -1 on background.
      * ``barycentrics``: float32 ``[B, H, W, 3]``, perspective-correct
        barycentric coordinates (in ``[0, 1]`` up to rounding, summing to 1)
        of the pixel centre w.r.t. the visible triangle's vertices in
        ``triangles`` order; zeros on background. Differentiable w.r.t.
        ``clip_vertices``.
      * ``z_ndc``: float32 ``[B, H, W]``, the normalised device coordinate
        ``z / w`` in ``[-1, 1]`` of the visible surface point (not a distance:
        ``Rendering.depth`` is the camera distance), 1.0 on background.
        Differentiable w.r.t. ``clip_vertices`` (with the visibility held
        fixed). The op registers this output as ``z_ndc`` too.

    The gradient is computed by the op's gradient kernel: for every covered
    pixel, the derivative of its barycentrics and z_ndc w.r.t. the 12 clip
    coordinates of its triangle's vertices, accumulated into ``[B, V, 4]``.
    Coverage changes (edges, occlusion boundaries) carry no gradient.
    ``triangle_ids`` has no gradient.

    Raises:
      ValueError: wrong rank, last dimension or dtype; height or width out of
        ``[1, 8192]``; batch * height * width above 2**26 (checked when the
        batch size is static, otherwise by the kernel at run time).
    """
    clip, tris = _check_geometry(clip_vertices, triangles)
    height, width = _check_image_size(height, width, _static_dim(clip, 0))
    module = _load_op_module()
    return tuple(module.recon_tf_rasterize(clip, tris, height=height, width=width))


@tf.RegisterGradient("ReconTfRasterize")
def _rasterize_grad(op: tf.Operation, grad_ids: tf.Tensor | None,
                    grad_barycentrics: tf.Tensor | None,
                    grad_z_ndc: tf.Tensor | None) -> list[tf.Tensor | None]:
    """Gradient of ReconTfRasterize w.r.t. clip_vertices (none for triangles)."""
    del grad_ids
    ids, barycentrics, z_ndc = op.outputs
    if grad_barycentrics is None:
        grad_barycentrics = tf.zeros_like(barycentrics)
    if grad_z_ndc is None:
        grad_z_ndc = tf.zeros_like(z_ndc)
    grad_clip = _load_op_module().recon_tf_rasterize_grad(
        op.inputs[0], op.inputs[1], ids, grad_barycentrics, grad_z_ndc)
    return [grad_clip, None]


def interpolate(attributes: tf.Tensor, triangles: tf.Tensor, triangle_ids: tf.Tensor,
                barycentrics: tf.Tensor) -> tf.Tensor:
    """Interpolates per-vertex attributes at every pixel with ordinary TF ops.

    Args:
      attributes: float ``[B, V, C]`` per-vertex attributes (any float dtype;
        ``barycentrics`` is cast to it). ``V`` may be 0 only when it is static.
      triangles: integer ``[T, 3]`` (cast to int32), the triangles passed to
        :func:`rasterize`; ``B * V`` must stay below 2**31.
      triangle_ids: int32 ``[B, H, W]`` from :func:`rasterize` (-1 = background).
      barycentrics: float ``[B, H, W, 3]`` from :func:`rasterize`.

    Returns:
      ``[B, H, W, C]`` tensor of ``attributes.dtype``:
      ``sum_k barycentrics[..., k] * attributes[b, triangles[id, k]]``, zeros on
      background (exactly, whatever the attribute values). Differentiable
      w.r.t. ``attributes`` and ``barycentrics`` (hence w.r.t. the clip vertices
      through :func:`rasterize`).

    Raises:
      ValueError: on wrong ranks, last dimensions, dtypes or batch sizes.
    """
    attributes = tf.convert_to_tensor(attributes, dtype_hint=tf.float32)
    triangles = tf.convert_to_tensor(triangles, dtype_hint=tf.int32)
    if not triangles.dtype.is_integer:
        raise ValueError(f"triangles must be an integer tensor [num_triangles, 3], "
                         f"got {triangles.dtype.name}")
    triangle_ids = tf.convert_to_tensor(triangle_ids, dtype_hint=tf.int32)
    barycentrics = tf.convert_to_tensor(barycentrics, dtype_hint=tf.float32)
    if attributes.shape.rank != 3 or not attributes.dtype.is_floating:
        raise ValueError(f"attributes must be a float tensor [batch, num_vertices, channels], "
                         f"got {attributes.dtype.name} {attributes.shape}")
    if triangles.shape.rank != 2 or triangles.shape[1] not in (None, 3):
        raise ValueError(f"triangles must have shape [num_triangles, 3], got {triangles.shape}")
    if triangle_ids.shape.rank != 3 or triangle_ids.dtype != tf.int32:
        raise ValueError(f"triangle_ids must be int32 [batch, height, width], "
                         f"got {triangle_ids.dtype.name} {triangle_ids.shape}")
    if (barycentrics.shape.rank != 4 or barycentrics.shape[3] not in (None, 3)
            or not barycentrics.dtype.is_floating):
        raise ValueError(f"barycentrics must be float [batch, height, width, 3], "
                         f"got {barycentrics.dtype.name} {barycentrics.shape}")
    if not barycentrics.shape[:3].is_compatible_with(triangle_ids.shape):
        raise ValueError(f"barycentrics {barycentrics.shape} and triangle_ids "
                         f"{triangle_ids.shape} must share [batch, height, width]")
    if not attributes.shape[:1].is_compatible_with(triangle_ids.shape[:1]):
        raise ValueError(f"attributes {attributes.shape} and triangle_ids "
                         f"{triangle_ids.shape} must have the same batch size")
    triangles = tf.cast(triangles, tf.int32)
    if attributes.shape[1] == 0:
        return tf.zeros(tf.concat([tf.shape(triangle_ids), [tf.shape(attributes)[2]]], 0),
                        attributes.dtype)
    # Flat gather from [B * V, C]: about twice as fast (forward and backward) as
    # tf.gather(..., batch_dims=1) on the CPU. Background pixels read the zero
    # row appended to the triangles (so an empty triangle list works), i.e.
    # vertex 0 of their image, with weight 0, then are set to exact zeros.
    covered = triangle_ids >= 0
    padded = tf.concat([triangles, tf.zeros([1, 3], tf.int32)], axis=0)
    vertex_ids = tf.gather(padded, tf.where(covered, triangle_ids, tf.shape(triangles)[0]))
    shape = tf.shape(attributes)
    vertex_ids += (tf.range(shape[0]) * shape[1])[:, tf.newaxis, tf.newaxis, tf.newaxis]
    corner_values = tf.gather(tf.reshape(attributes, [-1, shape[2]]), vertex_ids)  # [B,H,W,3,C]
    weights = tf.cast(barycentrics, attributes.dtype)[..., tf.newaxis]
    values = tf.reduce_sum(weights * corner_values, axis=-2)
    return tf.where(covered[..., tf.newaxis], values, tf.zeros_like(values))
