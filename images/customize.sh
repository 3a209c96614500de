#!/bin/sh
# mmdebstrap customize hook: install the agent and its system integration
# into the root filesystem "$1". Called by build-rootfs.sh with KESP_SRC,
# KESP_WHEELHOUSE, KESP_TARGET_CPU and KESP_TARGET_FEATURES set.
set -eu
root=${1:?root}
src=${KESP_SRC:?}
wheels=${KESP_WHEELHOUSE:?}
cpu=${KESP_TARGET_CPU:?}
features=${KESP_TARGET_FEATURES?}
files=$src/images/files
# The build host's pip settings (extra indexes, find-links, constraints) must
# not reach the chroot's offline install.
for v in $(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p'); do unset "$v"; done
export PIP_CONFIG_FILE=/dev/null

# --- the agent, offline from the pinned wheelhouse
mkdir -p "$root/opt/kesp" "$root/tmp/wheelhouse"
cp "$wheels"/* "$root/tmp/wheelhouse/"
chroot "$root" python3 -m venv /opt/kesp/venv
# The locked dependencies with their hashes checked, then the agent itself
# (its own wheel, built from this checkout), then a consistency check.
chroot "$root" /opt/kesp/venv/bin/pip install --quiet --no-index --no-cache-dir \
    --require-hashes --find-links /tmp/wheelhouse -r /tmp/wheelhouse/requirements.lock
chroot "$root" /opt/kesp/venv/bin/pip install --quiet --no-index --no-cache-dir --no-deps \
    --find-links /tmp/wheelhouse kesp-kiosk-agent
chroot "$root" /opt/kesp/venv/bin/pip check --quiet >/dev/null 2>&1 || \
    chroot "$root" /opt/kesp/venv/bin/pip check
rm -rf "$root/tmp/wheelhouse"
# The technician's commands on the PATH as docs/TECHNICIAN.md writes them
# (sudo's secure_path and root's PATH include /usr/local/bin).
for tool in kesp-agent kesp-provision; do
    ln -sf "/opt/kesp/venv/bin/$tool" "$root/usr/local/bin/$tool"
done
mkdir -p "$root/opt/kesp/docs"
cp "$src"/docs/*.md "$root/opt/kesp/docs/" 2>/dev/null || true

# --- users, directories, units, rules
install -D -m 0644 "$src/systemd/kesp.sysusers.conf" "$root/usr/lib/sysusers.d/kesp.conf"
install -D -m 0644 "$src/systemd/kesp.tmpfiles.conf" "$root/usr/lib/tmpfiles.d/kesp.conf"
install -D -m 0644 "$src/systemd/kesp-agent.service" "$root/etc/systemd/system/kesp-agent.service"
install -D -m 0644 "$src/systemd/99-kesp.rules" "$root/etc/udev/rules.d/99-kesp.rules"
sed -e "s/@KESP_TARGET_CPU@/$cpu/" -e "s/@KESP_TARGET_FEATURES@/$features/" \
    "$files/systemd/kesp-agent.service.d/image.conf" \
    > "$root/etc/systemd/system/kesp-agent.service.d.tmp"
install -D -m 0644 "$root/etc/systemd/system/kesp-agent.service.d.tmp" \
    "$root/etc/systemd/system/kesp-agent.service.d/image.conf"
rm "$root/etc/systemd/system/kesp-agent.service.d.tmp"
install -D -m 0644 "$files/systemd/kesp-firstboot.service" \
    "$root/etc/systemd/system/kesp-firstboot.service"
install -D -m 0755 "$files/firstboot" "$root/usr/lib/kesp/firstboot"
install -D -m 0644 "$files/systemd/systemd-time-wait-sync.service.d/kesp.conf" \
    "$root/etc/systemd/system/systemd-time-wait-sync.service.d/kesp.conf"
install -D -m 0644 "$files/repart.d/50-kesp-state.conf" "$root/usr/lib/repart.d/50-kesp-state.conf"
install -D -m 0644 "$files/journald.conf" "$root/etc/systemd/journald.conf.d/kesp.conf"
install -D -m 0644 "$files/20-wired.network" "$root/etc/systemd/network/20-wired.network"
install -m 0644 "$files/fstab" "$root/etc/fstab"
install -m 0644 "$files/issue" "$root/etc/issue"
chroot "$root" systemd-sysusers
chroot "$root" systemd-tmpfiles --create /usr/lib/tmpfiles.d/kesp.conf
# Mount points on the read-only root: the state partition and the stick.
mkdir -p "$root/data" "$root/var/lib/systemd/timesync" "$root/media/usb"
systemctl --root="$root" enable kesp-agent.service kesp-firstboot.service \
    systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    systemd-time-wait-sync.service

# --- the read-only root: what the base system's services expect to find.
# mmdebstrap copies the build host's /etc/hostname; every kiosk is "kesp"
# (its identity is the device id in /etc/kesp, not the host name).
printf 'kesp\n' > "$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tkesp\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    > "$root/etc/hosts"
# Name servers come from DHCP through systemd-resolved, not from the build
# host's resolv.conf (which mmdebstrap copies in: a broker given by name would
# not resolve at the polling station).
ln -sfn ../run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"
# StateDirectory= of logind, rfkill and backlight: systemd cannot create them
# on a read-only /var/lib at boot (logind then fails: no console logins).
mkdir -p "$root/var/lib/systemd/linger" "$root/var/lib/systemd/rfkill" \
    "$root/var/lib/systemd/backlight"
# Package updates and dpkg backups cannot run on a read-only root (updates
# come as a new image).
systemctl --root="$root" disable apt-daily.timer apt-daily-upgrade.timer dpkg-db-backup.timer \
    2>/dev/null || true

# --- Numba cache, compiled for the target CPU, kept read-only in the image;
# first boot copies it onto the state partition. Numba keys a cache entry on
# (LLVM triple, CPU name, CPU features): the unit's drop-in sets the same two
# variables, so the kiosk finds these entries whatever its chroot or emulator
# here reports.
chroot "$root" env NUMBA_CACHE_DIR=/usr/lib/kesp/numba-cache NUMBA_CPU_NAME="$cpu" \
    NUMBA_CPU_FEATURES="$features" \
    /opt/kesp/venv/bin/python -c "from agent.match.warm import warm_up; warm_up()"
chmod -R a+rX "$root/usr/lib/kesp/numba-cache"

# --- reproducibility and first boot: no machine identity baked in
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin
