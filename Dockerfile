# One image for every accelerator: `tvq` with the JAX build that matches ACCELERATOR.
#   docker build --build-arg ACCELERATOR=tpu -t REGISTRY/tvq:TAG .
# BASE_IMAGE must provide python3 (>= 3.11) with the venv module; scripts/build_image.sh builds
# one without a registry. CA_BUNDLE, when set, is a CA file that pip should trust during the
# build (for TLS-inspecting proxies; mount it with `--volume`, it is not copied into the image).
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG ACCELERATOR=cpu
ARG CA_BUNDLE=""

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/tvq \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib64
# LD_LIBRARY_PATH: where GKE's device plugin mounts the NVIDIA driver libraries (libcuda.so.1)
# into GPU pods; an absent folder elsewhere.

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

COPY pyproject.toml README.md /src/
COPY tvq /src/tvq
COPY launcher /src/launcher

# DL3013 wants pinned packages; this installs the local project, whose pyproject.toml holds the
# dependency bounds.
# hadolint ignore=DL3013
RUN case "${ACCELERATOR}" in \
        cpu) extras="train" ;; \
        cuda) extras="train,cuda" ;; \
        tpu) extras="train,tpu" ;; \
        *) echo "ACCELERATOR: got '${ACCELERATOR}'; allowed: cpu, cuda, tpu" >&2; exit 2 ;; \
    esac \
    && python3 -m venv "${VIRTUAL_ENV}" \
    && pip install --no-cache-dir ${CA_BUNDLE:+--cert "${CA_BUNDLE}"} "/src[${extras}]" \
    && rm -rf /src \
    && useradd --uid 1000 --user-group --create-home --home-dir /home/tvq --shell /bin/bash tvq

WORKDIR /home/tvq
USER 1000:1000

ENTRYPOINT ["tvq"]
CMD ["--help"]
