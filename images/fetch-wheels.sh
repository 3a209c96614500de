#!/bin/sh
# Download every wheel pinned in requirements.lock for a kiosk platform into
# DIR, hashes checked (pip's --require-hashes mode), so that build-rootfs.sh
# (KESP_WHEELHOUSE=DIR) and the arm64 tests run without a package index.
#
#   images/fetch-wheels.sh DIR [aarch64|x86_64]      # default aarch64
set -eu
dir=${1:?usage: fetch-wheels.sh DIR [aarch64|x86_64]}
march=${2:-aarch64}
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
mkdir -p "$dir"
# Every manylinux tag bookworm's glibc 2.36 can run (pip does not widen a
# --platform on its own).
plats=$(for v in $(seq 17 36); do printf -- '--platform manylinux_2_%s_%s ' "$v" "$march"; done)
# shellcheck disable=SC2086
"$python" -m pip download --quiet --no-deps --only-binary=:all: $plats \
    --platform "manylinux2014_$march" --python-version 3.11 --implementation cp \
    --require-hashes --dest "$dir" -r "$here/requirements.lock"
