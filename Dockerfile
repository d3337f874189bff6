# GPU image for training and reconstruction. Base: CUDA 12.5 + cuDNN 9, what the
# TensorFlow 2.21 wheels are built against (tf.sysconfig.get_build_info(): cuda 12.5.1,
# cudnn 9; tensorflow[and-cuda] pulls the *-cu12 / cudnn 9 libraries). The *devel* image
# has nvcc, so the install builds the rasterizer op's CUDA kernel as well as the CPU
# one, and RECON_TF_REQUIRE_CUDA=1 makes a failing CUDA build fail the image. The install
# is CI's own (.ci/run): tools/setup_env.sh. Not built in CI (no Docker engine there);
# tests/test_docker.py checks this file against the repository.
#
#   docker build -t recon_tf .
#
# Assets (face model, detectors, identity nets) are mounted, never baked in; runs/ and
# the cache ($RECON_TF_CACHE: converted face model, default training data) persist on
# the host:
#
#   docker run --gpus all -v "$PWD/../shared/assets:/assets:ro" -e RECON_TF_ASSETS=/assets \
#       -v "$PWD/runs:/recon_tf/runs" -v "$PWD/cache:/cache" \
#       recon_tf python experiments/train_coarse.py --model_dir=runs/coarse
#   docker run --gpus all -v "$PWD/../shared/assets:/assets:ro" -e RECON_TF_ASSETS=/assets \
#       -v "$PWD/runs:/recon_tf/runs" -v "$PWD/cache:/cache" \
#       recon_tf python experiments/train_fine.py --coarse_model=runs/coarse --model_dir=runs/fine
#   docker run --gpus all -v "$PWD/../shared/assets:/assets:ro" -e RECON_TF_ASSETS=/assets \
#       -v "$PWD/runs:/recon_tf/runs:ro" -v "$PWD/cache:/cache" \
#       -v "$PWD/photos:/photos:ro" -v "$PWD/out:/out" \
#       recon_tf python tools/reconstruct.py --input=/photos --output=/out \
#       --model=runs/coarse --fine_model=runs/fine
#
# The last line without its command runs the default CMD (fitting, no trained model):
# tools/reconstruct.py --input=/photos --output=/out.
FROM nvidia/cuda:12.5.1-cudnn-devel-ubuntu22.04

ARG PYTHON=python3.11
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        ${PYTHON} ${PYTHON}-venv ${PYTHON}-dev g++ libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /recon_tf
COPY . .
# CI's install (.ci/run), with the CUDA kernel required; then TensorFlow's CUDA libraries.
RUN RECON_TF_REQUIRE_CUDA=1 PYTHON=${PYTHON} bash tools/setup_env.sh \
    && .venv/bin/python -m pip install -q "tensorflow[and-cuda]==2.21.*" \
    && test -f recon_tf/render/_rasterize_op_gpu.so
ENV PATH=/recon_tf/.venv/bin:$PATH RECON_TF_ASSETS=/assets RECON_TF_CACHE=/cache
CMD ["python", "tools/reconstruct.py", "--input=/photos", "--output=/out"]
