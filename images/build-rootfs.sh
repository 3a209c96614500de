#!/bin/sh
# Build the kiosk root filesystem with mmdebstrap: Debian bookworm, the agent
# in /opt/kesp/venv with a warmed Numba cache, units, udev rules, read-only
# root with a state partition. Reproducible: packages from a pinned
# snapshot.debian.org date, Python wheels pinned with their hashes in
# requirements.lock (CPython 3.11, glibc 2.36: bookworm's), SOURCE_DATE_EPOCH
# from the git commit. Every prerequisite is checked before anything is
# downloaded.
#
#   images/build-rootfs.sh OUTPUT            # OUTPUT: a directory or a .tar
#
# Environment (defaults in brackets):
#   KESP_ARCH        arm64 | amd64 [arm64]  (arm64 on an amd64 host needs
#                    qemu-user-static + binfmt-support)
#   KESP_SNAPSHOT    snapshot.debian.org timestamp [20250520T000000Z]
#   KESP_MIRROR      full apt source line, overrides the snapshot (tests use
#                    deb.debian.org for speed; the image of record uses the snapshot)
#   KESP_WHEELHOUSE  a directory already holding the locked wheels for the
#                    target (images/fetch-wheels.sh DIR makes one): the build
#                    then needs no Python package index at all [download them]
#   KESP_TARGET_CPU  LLVM CPU the Numba cache is compiled for, and
#   KESP_TARGET_FEATURES  its LLVM feature string, exactly as LLVM reports it
#                    on the kiosk (Numba keys its cache on both)
#                    [cortex-a72 / the Raspberry Pi 4's on arm64,
#                     x86-64-v2 / its baseline on amd64]
#   KESP_NO_KERNEL   set: no kernel and firmware (containers, tests)
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
# shellcheck source=images/target-cpu.sh
. "$here/target-cpu.sh"
case "$arch" in
    arm64) cpu=${KESP_TARGET_CPU:-$KESP_PI4_CPU}; features=${KESP_TARGET_FEATURES-$KESP_PI4_FEATURES}
           march=aarch64; extra=linux-image-arm64,raspi-firmware,firmware-brcm80211 ;;
    amd64) cpu=${KESP_TARGET_CPU:-x86-64-v2}; features=${KESP_TARGET_FEATURES-$KESP_X86_64_V2_FEATURES}
           march=x86_64; extra=linux-image-amd64 ;;
    *) echo "build-rootfs: unsupported KESP_ARCH '$arch' (arm64 or amd64)" >&2; exit 2 ;;
esac
[ -n "${KESP_NO_KERNEL:-}" ] && extra=

# --- prerequisites, all checked before any download; every gap is listed
missing=
need() { missing="${missing}  - $1
"; }
command -v mmdebstrap >/dev/null 2>&1 || need "mmdebstrap: apt-get install mmdebstrap"
if [ "$(id -u)" != 0 ] && [ -z "${KESP_MODE:-}" ]; then
    need "root: run with sudo (or KESP_MODE=unshare with subuid/subgid ranges for this user)"
fi
if ! "$python" -c "import pip" >/dev/null 2>&1; then
    need "pip for $python: apt-get install python3-pip (or set PYTHON=)"
fi
host=$(dpkg --print-architecture 2>/dev/null || uname -m)
if [ "$host" != "$arch" ]; then
    # Foreign binaries run in the chroot through qemu-user registered with
    # binfmt_misc, with the F flag (the interpreter is opened at registration,
    # so it works inside the chroot).
    if ! command -v "qemu-$march-static" >/dev/null 2>&1 && \
       [ ! -e "/usr/libexec/qemu-binfmt/$march-binfmt-P" ]; then
        need "qemu-$march-static: apt-get install qemu-user-static binfmt-support"
    elif [ ! -e /proc/sys/fs/binfmt_misc/status ]; then
        need "binfmt_misc not mounted: mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"
    elif [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$march" ]; then
        need "binfmt registration for $march: apt-get install binfmt-support && update-binfmts --enable qemu-$march"
    elif ! grep -q '^enabled' "/proc/sys/fs/binfmt_misc/qemu-$march" || \
         ! grep -q '^flags:.*F' "/proc/sys/fs/binfmt_misc/qemu-$march"; then
        need "binfmt entry qemu-$march is disabled or lacks the F flag: update-binfmts --enable qemu-$march (qemu-user-static registers it with F)"
    fi
fi
# Space: the root tree (about 1.2 GB with kernel and firmware), the mmdebstrap
# temporary copy and the wheelhouse.
need_mib=3000
for dir in "$(dirname "$out")" "${TMPDIR:-/tmp}"; do
    [ -d "$dir" ] || { need "directory $dir does not exist"; continue; }
    have=$(df -Pm "$dir" | awk 'NR == 2 {print $4}')
    [ "$have" -ge "$need_mib" ] || need "disk space: $need_mib MiB free needed in $dir, $have MiB available"
done
if [ -n "${KESP_WHEELHOUSE:-}" ]; then
    [ -d "$KESP_WHEELHOUSE" ] || need "KESP_WHEELHOUSE=$KESP_WHEELHOUSE is not a directory (images/fetch-wheels.sh DIR makes one)"
fi
# The Debian mirror must answer before mmdebstrap starts.
release=$(printf '%s\n' "$mirror" | sed -n 's|.*\(https\{0,1\}://[^ ]*\).*|\1|p')
if [ -n "$release" ] && ! "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip('/') + '/dists/bookworm/Release', timeout=30)" "$release" 2>/dev/null; then
    need "Debian mirror $release does not answer: check the network or set KESP_MIRROR='deb http://deb.debian.org/debian bookworm main non-free-firmware'"
fi
if [ -n "$missing" ]; then
    printf 'build-rootfs: cannot build the %s image, missing:\n%s' "$arch" "$missing" >&2
    exit 1
fi

SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/wheelhouse"
# The agent as a wheel plus every pinned dependency for the target platform,
# so the chroot installs offline, exactly these versions, hashes checked.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheelhouse" "$repo"
if [ -n "${KESP_WHEELHOUSE:-}" ]; then
    cp "$KESP_WHEELHOUSE"/*.whl "$work/wheelhouse/"
else
    PYTHON=$python sh "$here/fetch-wheels.sh" "$work/wheelhouse" "$march"
fi
cp "$here/requirements.lock" "$work/wheelhouse/"

KESP_SRC=$repo KESP_WHEELHOUSE=$work/wheelhouse KESP_TARGET_CPU=$cpu \
mmdebstrap --mode="${KESP_MODE:-auto}" --variant=minbase --architectures="$arch" \
    --components=main,non-free-firmware \
    --include=systemd,systemd-sysv,systemd-timesyncd,udev,dbus,python3,python3-venv,fonts-dejavu-core,tzdata,ca-certificates,iproute2,kmod,fdisk,e2fsprogs,util-linux,login,passwd,sudo,systemd-resolved${extra:+,$extra} \
    --customize-hook="KESP_SRC='$repo' KESP_WHEELHOUSE='$work/wheelhouse' KESP_TARGET_CPU='$cpu' KESP_TARGET_FEATURES='$features' sh '$here/customize.sh' \"\$1\"" \
    bookworm "$out" "$mirror"
