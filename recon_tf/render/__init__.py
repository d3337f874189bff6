"""Rendering: differentiable rasterization of triangle meshes.

Modules (import them explicitly; this package imports nothing on its own):

* ``rasterizer``: ``rasterize`` (custom TF op with CPU and CUDA kernels and a
  registered gradient) and ``interpolate`` (per-vertex attributes to pixels).
* ``reference``: ``rasterize_reference``, a slow pure-TF equivalent of
  ``rasterize`` used by tests and benchmarks.
* ``build_op``: compiles the op libraries (``python recon_tf/render/build_op.py``).
"""
