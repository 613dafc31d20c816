# syntax=docker/dockerfile:1
# Understudy: the gateway and the distiller worker, one image; ROLE picks which (see
# deploy/entrypoint.sh). vLLM runs from its own image beside it (deploy/compose.yaml).
#
#   CPU, everything (gateway + in-process student + distiller):
#       docker build -t understudy .
#   GPU (CUDA torch for training and the local student; the host needs the NVIDIA toolkit):
#       docker build -t understudy:gpu --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   Gateway only (students on vLLM, no torch at all, ~150 MB; EXTRAS=postgres for PostgreSQL):
#       docker build -t understudy:gateway --build-arg EXTRAS= .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Extras to install: local (transformers + torch), train (the distiller), postgres (psycopg,
# for storage.url = postgresql://...); empty for none.
ARG EXTRAS=local,train,postgres
# Where torch comes from: the CPU build by default, a CUDA build for GPU hosts.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/understudy
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY router ./router
COPY distiller ./distiller
COPY storage ./storage
COPY student ./student
COPY understudy ./understudy
RUN spec="."; if [ -n "${EXTRAS}" ]; then spec=".[${EXTRAS}]"; fi \
    && /opt/understudy/bin/pip install --extra-index-url "${TORCH_INDEX}" "${spec}"

FROM ${PYTHON_IMAGE}
RUN groupadd --gid 10001 understudy \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin understudy \
    && mkdir -p /data/models /data/hf-cache \
    && chown -R understudy:understudy /data
COPY --from=build /opt/understudy /opt/understudy
COPY --chmod=0755 deploy/entrypoint.sh /usr/local/bin/understudy-entrypoint
COPY deploy/healthcheck.py /usr/local/lib/understudy-healthcheck.py
# Settings come from UNDERSTUDY_* variables (docs/settings.md); the data directory is a
# volume: the SQLite log, the registry and every trained student live there. /data/models and
# /data/hf-cache exist here, owned by the user, so that a new volume mounted on either (shared
# by replicas: deploy/compose.yaml) takes that owner.
ENV PATH=/opt/understudy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/data/hf-cache \
    ROLE=gateway \
    UNDERSTUDY_HOST=0.0.0.0 \
    UNDERSTUDY_PORT=8000 \
    UNDERSTUDY_DATA_DIR=/data
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/understudy-healthcheck.py"]
ENTRYPOINT ["understudy-entrypoint"]
CMD []
