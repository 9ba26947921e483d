#!/usr/bin/env bash
# Build a stand-in for the official python:3.11-slim-bookworm image where no container registry
# is reachable, from Debian's package mirror alone (debootstrap + docker import).
#
# Usage: scripts/offline-base-image.sh [IMAGE]     (needs root and a running Docker engine)
#        docker compose build --build-arg PYTHON_IMAGE=IMAGE   (or export PYTHON_IMAGE=IMAGE)
#
# IMAGE defaults to $RNNADD_PYTHON_IMAGE, else rnnadd-python:3.11-bookworm-local. Nothing is
# done when IMAGE already exists (set FORCE=1 to rebuild). Debian bookworm's python3 is 3.11.
#
# The image trusts this host's CA bundle (/etc/ssl/certs/ca-certificates.crt, or $HOST_CA_BUNDLE)
# and sets PIP_CERT to it, so `pip install` inside `docker build` works behind a TLS-intercepting
# proxy as well.
#
# Env: DEBIAN_MIRROR (default http://deb.debian.org/debian),
#      DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
set -euo pipefail

image=${1:-${RNNADD_PYTHON_IMAGE:-rnnadd-python:3.11-bookworm-local}}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
ca_bundle=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
suite=bookworm

missing=()
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

if [[ -z ${FORCE:-} ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image already exists"
    exit 0
fi

work=$(mktemp -d /tmp/rnnadd-base.XXXXXX)
rootfs_image="rnnadd-debootstrap:$suite-$$"
cleanup() {
    rm -rf "$work"
    docker image rm "$rootfs_image" >/dev/null 2>&1 || true
}
trap cleanup EXIT

echo "debootstrap $suite from $mirror"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}
cat >"$work/rootfs/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
EOF
rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*

echo "importing root filesystem as $rootfs_image"
tar -C "$work/rootfs" --numeric-owner -c . | docker import - "$rootfs_image" >/dev/null
rm -rf "$work/rootfs"

mkdir -p "$work/context"
if [[ -s $ca_bundle ]]; then
    cp "$ca_bundle" "$work/context/ca-certificates.crt"
else
    echo "no CA bundle at $ca_bundle; the image keeps Debian's" >&2
    : >"$work/context/ca-certificates.crt"
fi
cat >"$work/context/Dockerfile" <<'EOF'
ARG ROOTFS_IMAGE
FROM ${ROOTFS_IMAGE}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv python3-pip \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && ln -sf /usr/bin/python3 /usr/local/bin/python
COPY ca-certificates.crt /tmp/host-ca.crt
RUN if [ -s /tmp/host-ca.crt ]; then cp /tmp/host-ca.crt /etc/ssl/certs/ca-certificates.crt; fi \
    && rm /tmp/host-ca.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
EOF

echo "building $image"
docker build -q --build-arg "ROOTFS_IMAGE=$rootfs_image" -t "$image" "$work/context" >/dev/null
docker run --rm "$image" python --version
echo "base image $image ready"
