#!/bin/sh
# Build the kiosk root filesystem with mmdebstrap: Debian bookworm, the agent
# in /opt/kesp/venv with a warmed Numba cache, units, udev rules, read-only
# root with a state partition. Reproducible: packages from a pinned
# snapshot.debian.org date, Python wheels pinned in requirements.lock (for
# glibc 2.36, bookworm's),
# SOURCE_DATE_EPOCH from the git commit.
#
#   images/build-rootfs.sh OUTPUT            # OUTPUT: a directory or a .tar
#
# Environment (defaults in brackets):
#   KESP_ARCH        arm64 | amd64 [arm64]  (arm64 on an amd64 host needs
#                    qemu-user-static + binfmt-support)
#   KESP_SNAPSHOT    snapshot.debian.org timestamp [20250520T000000Z]
#   KESP_MIRROR      full apt source line, overrides the snapshot (tests use
#                    deb.debian.org for speed; the image of record uses the snapshot)
#   KESP_TARGET_CPU  LLVM CPU the Numba cache is compiled for
#                    [cortex-a72 on arm64 (Raspberry Pi 4), x86-64-v2 on amd64]
#   KESP_MODE        mmdebstrap --mode [auto]
#   PYTHON           Python with pip used to fetch the wheels [python3]
set -eu
out=${1:?usage: build-rootfs.sh OUTPUT}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
arch=${KESP_ARCH:-arm64}
python=${PYTHON:-python3}
snapshot=${KESP_SNAPSHOT:-20250520T000000Z}
mirror=${KESP_MIRROR:-"deb [check-valid-until=no] http://snapshot.debian.org/archive/debian/$snapshot/ bookworm main non-free-firmware"}
case "$arch" in
    arm64) cpu=${KESP_TARGET_CPU:-cortex-a72}; march=aarch64
           extra=linux-image-arm64,raspi-firmware,firmware-brcm80211 ;;
    amd64) cpu=${KESP_TARGET_CPU:-x86-64-v2}; march=x86_64
           extra=linux-image-amd64 ;;
    *) echo "unsupported KESP_ARCH $arch" >&2; exit 2 ;;
esac
[ -n "${KESP_NO_KERNEL:-}" ] && extra=
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The agent as a wheel plus every pinned dependency for the target platform,
# so the chroot installs offline and exactly these versions.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheelhouse" "$repo"
# Every manylinux tag bookworm's glibc 2.36 can run (pip does not widen a
# --platform on its own).
plats=$(for v in $(seq 17 36); do printf -- '--platform manylinux_2_%s_%s ' "$v" "$march"; done)
# shellcheck disable=SC2086
"$python" -m pip download --quiet --only-binary=:all: $plats --platform "manylinux2014_$march" \
    --python-version 3.11 \
    --implementation cp --dest "$work/wheelhouse" -r "$here/requirements.lock"
cp "$here/requirements.lock" "$work/wheelhouse/"

KESP_SRC=$repo KESP_WHEELHOUSE=$work/wheelhouse KESP_TARGET_CPU=$cpu \
mmdebstrap --mode="${KESP_MODE:-auto}" --variant=minbase --architectures="$arch" \
    --components=main,non-free-firmware \
    --include=systemd,systemd-sysv,systemd-timesyncd,udev,dbus,python3,python3-venv,fonts-dejavu-core,tzdata,ca-certificates,iproute2,kmod,fdisk,e2fsprogs,util-linux,login,passwd${extra:+,$extra} \
    --customize-hook="KESP_SRC=$repo KESP_WHEELHOUSE=$work/wheelhouse KESP_TARGET_CPU=$cpu sh '$here/customize.sh' \"\$1\"" \
    bookworm "$out" "$mirror"
