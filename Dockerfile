# GPU image for training and evaluation (docker run --gpus all ...). The CUDA
# devel base provides nvcc, so the install compiles the rasterizer op's CUDA
# kernel as well as the CPU one. Not built in CI (no Docker engine there).
#   docker build -t recon_tf .
#   docker run --gpus all -v $PWD/../shared/assets:/assets -e RECON_TF_ASSETS=/assets \
#       -v $PWD/photos:/photos -v $PWD/out:/out \
#       recon_tf python tools/reconstruct.py --input=/photos --output=/out
FROM nvidia/cuda:12.5.1-cudnn-devel-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv python3.11-dev g++ git libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /recon_tf
COPY . .
RUN PYTHON=python3.11 bash tools/setup_env.sh \
    && .venv/bin/python -m pip install "tensorflow[and-cuda]==2.21.*"
ENV PATH=/recon_tf/.venv/bin:$PATH RECON_TF_ASSETS=/assets
CMD ["python", "tools/reconstruct.py", "--input=/photos", "--output=/out"]
