#!/usr/bin/env bash
# Create .venv (if absent) and install recon_tf into it, building the rasterizer op.
# TensorFlow is installed first and the package with --no-build-isolation, so the op is
# compiled against the very TensorFlow it will load into (no ABI mismatch, no second
# 572 MB TensorFlow download into an isolated build environment).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q "tensorflow==2.21.*"
.venv/bin/python -m pip install -q --no-build-isolation -e ".[dev]"
# tensorflow-graphics is only a test oracle (rotation / SH); its dependencies
# (tensorflow-addons) do not import under Keras 3, so install it without them.
.venv/bin/python -m pip install -q --no-deps tensorflow-graphics
.venv/bin/python -c "import recon_tf.render.rasterizer as r; print('rasterizer op:', r.op_library_path())"
