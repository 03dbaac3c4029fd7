#!/usr/bin/env bash
# Build the cpu image with podman and run a three-step `tvq train` in it (CI runs this after
# the tests). Needs no Docker daemon and no registry: as root, podman runs with
# scripts/containers.conf, and the base image is made with debootstrap unless BASE_IMAGE names
# one (e.g. BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm where a registry is reachable).
# Skips (exit 0, saying why) only when podman is missing and cannot be installed.
#   scripts/build_image.sh [IMAGE]          # default localhost/tvq:cpu
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-localhost/tvq:cpu}
base=${BASE_IMAGE:-localhost/tvq-base:bookworm}
ca_bundle=/etc/ssl/certs/ca-certificates.crt
export CONTAINERS_CONF="$PWD/scripts/containers.conf"

log() { echo "build_image: $*"; }

install_tools() {  # podman, runc and debootstrap from the distribution, when we may
    local missing=()
    for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        log "cannot install ${missing[*]}: needs root and apt-get"
        return 1
    fi
    log "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update >/dev/null 2>&1 && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    }
}

if ! install_tools && ! command -v podman >/dev/null; then
    log "SKIP: podman is not installed and cannot be installed here; the image was not built"
    exit 0
fi

if ! podman image exists "$base"; then
    [ -z "${BASE_IMAGE:-}" ] || { log "base image $base not found"; exit 1; }
    log "making base image $base with debootstrap (Debian bookworm, python3)"
    rootfs=$(mktemp -d "${TMPDIR:-/tmp}/tvq-rootfs.XXXXXX")
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
    rm -rf "$rootfs"
fi

build_args=(--format docker --build-arg "BASE_IMAGE=$base" --build-arg ACCELERATOR=cpu)
if [ -f "$ca_bundle" ]; then  # lets pip through a TLS-inspecting proxy; not copied into the image
    build_args+=(--build-arg "CA_BUNDLE=$ca_bundle" --volume "$ca_bundle:$ca_bundle:ro")
fi
log "building $image"
podman build "${build_args[@]}" --tag "$image" .

user=$(podman image inspect --format '{{.Config.User}}' "$image")
[ "$user" = "1000:1000" ] || { log "image user is '$user', expected 1000:1000"; exit 1; }

log "running a three-step training in $image (no network)"
output=$(podman run --rm --network none "$image" train --steps 3 \
    --set optimizer.warmup_steps=1 --set run.log_every=1 -o /home/tvq/runs/smoke 2>&1) || {
    echo "$output"; log "tvq train failed in the image"; exit 1; }
echo "$output" | tail -5
last_step=$(echo "$output" | awk '$1 == "tvq-metrics" {sub("step=", "", $2); step = $2} END {print step + 0}')
[ "$last_step" -ge 3 ] || { log "expected tvq-metrics lines up to step 3, got $last_step"; exit 1; }
log "OK: $image trains (last logged step $last_step)"
