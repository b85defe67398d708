# syntax=docker/dockerfile:1
# gpuwarden's control plane (`gpuwarden serve`) with its web UI; the same image runs
# `gpuwarden export ...` in deploy/docker-compose.yml. Build from the repository root:
#   docker build -f deploy/serve.Dockerfile -t gpuwarden-serve:0.1.0 .

# The web UI (React + TypeScript + Vite), built into src/gpuwarden/web/dist.
FROM node:22-bookworm-slim AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/ ./
RUN npm run build

FROM python:3.12-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src/ src/
COPY --from=web /src/src/gpuwarden/web/dist/ src/gpuwarden/web/dist/
RUN pip install --no-cache-dir . \
    && rm -rf /build \
    && mkdir -p /var/lib/gpuwarden /export/prometheus /export/grafana \
    && chown -R 65534:65534 /var/lib/gpuwarden /export
WORKDIR /var/lib/gpuwarden
# nobody, like Prometheus' image: one owner for the token files both read
USER 65534:65534
ENV GPUWARDEN_HOME=/var/lib/gpuwarden \
    GPUWARDEN_CONFIG=/etc/gpuwarden/gpuwarden.yaml
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]
ENTRYPOINT ["gpuwarden"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
