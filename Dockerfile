# syntax=docker/dockerfile:1
# The gateway (and the distiller worker) on CPU. Build: docker build -t understudy .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY router ./router
COPY distiller ./distiller
COPY storage ./storage
ARG EXTRAS=local,train
RUN python -m venv /opt/understudy \
    && /opt/understudy/bin/pip install --no-cache-dir \
       --extra-index-url https://download.pytorch.org/whl/cpu ".[${EXTRAS}]"

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 understudy \
    && mkdir /data && chown understudy /data
COPY --from=build /opt/understudy /opt/understudy
ENV PATH=/opt/understudy/bin:$PATH \
    UNDERSTUDY_HOST=0.0.0.0 \
    UNDERSTUDY_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
USER understudy
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)"]
ENTRYPOINT ["understudy"]
CMD ["serve"]
