# syntax=docker/dockerfile:1
# A GPU node image for RunPod templates (or any host with the NVIDIA container runtime):
# CUDA, Slurm, munge and gpuwarden. Its entrypoint is gpuwarden's node bootstrap (the script
# `gpuwarden up` sends to RunPod pods, baked in here with the install step skipped): it
# receives the node token and munge key from `gpuwarden up` (or reads them from its
# environment off RunPod), writes the Slurm configuration, starts slurmctld on rank 0 and
# slurmd everywhere, then runs `gpuwarden node`. Its inputs are environment variables: see
# `python -m gpuwarden.providers.bootstrap script` or src/gpuwarden/providers/bootstrap.py.
# Build from the repository root at the control plane's version, push it, and name it in
# the cluster file as `runpod: {install: {image: REGISTRY/gpuwarden-node:VERSION}}`:
#   docker build -f deploy/node.Dockerfile -t gpuwarden-node:0.1.0 .
ARG BASE_IMAGE=nvidia/cuda:12.6.2-base-ubuntu24.04
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Ubuntu 24.04's Slurm (23.11) has the dynamic nodes (slurmd -Z) the bootstrap uses.
RUN apt-get update \
    && apt-get install -y --no-install-recommends slurm-wlm munge python3 python3-venv \
        ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml README.md /tmp/gpuwarden/
COPY src/ /tmp/gpuwarden/src/
RUN python3 -m venv /opt/gpuwarden \
    && /opt/gpuwarden/bin/pip install --no-cache-dir /tmp/gpuwarden \
    && rm -rf /tmp/gpuwarden \
    && /opt/gpuwarden/bin/python -m gpuwarden.providers.bootstrap script \
        > /usr/local/bin/gpuwarden-bootstrap \
    && chmod 0755 /usr/local/bin/gpuwarden-bootstrap
# gpuwarden, Slurm and munge are installed: the bootstrap skips its install step
ENV PATH=/opt/gpuwarden/bin:$PATH \
    GPUWARDEN_PYTHON=/opt/gpuwarden/bin/python \
    GPUWARDEN_SKIP_INSTALL=1
# gpuwarden node, slurmctld, slurmd
EXPOSE 9400 6817 6818
# Arguments (such as the start command `gpuwarden up` gives RunPod pods) are ignored: this
# image already holds the same bootstrap. For a shell: docker run --entrypoint bash ...
ENTRYPOINT ["/usr/local/bin/gpuwarden-bootstrap"]
