#!/bin/bash
# Build (once) a pristine Debian 12 "bookworm" chroot with Debian's waagent installed and
# pack it as a tarball under $CACHE_DIR. The cache key is the hash of this script, so a
# changed package list or mirror rebuilds it; tests unpack a fresh copy for every run and
# never touch the cached tarball. Prints the tarball path on stdout.
#   usage: tests/pkg/mkchroot.sh            (root; needs debootstrap and network on a cold cache)
set -euo pipefail
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive PATH=/usr/sbin:/usr/bin:/sbin:/bin

SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd: a real image has it (systemctl/deb-systemd-helper behave as on a VM);
# waagent: the package ours must replace (pulls python3 in).
PACKAGES="systemd waagent"

CACHE_DIR=${CACHE_DIR:-/var/cache/azure-firstboot-test}
key=$(sha256sum "$0" | cut -c1-16)
out="$CACHE_DIR/pkg-chroot/$SUITE-waagent-$key.tar"
if [ -s "$out" ]; then echo "$out"; exit 0; fi

mkdir -p "$CACHE_DIR/pkg-chroot"
work=$(mktemp -d "$CACHE_DIR/pkg-chroot/build.XXXXXX")
root="$work/root"
cleanup() {
    mountpoint -q "$root/proc" && umount -l "$root/proc" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "mkchroot: debootstrap $SUITE from $MIRROR (key $key)" >&2
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }

# Never start services inside the chroot (standard Debian mechanism).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$root/etc/apt/apt.conf.d/90norecommends"

mount -t proc proc "$root/proc"
chroot "$root" apt-get update -qq
# shellcheck disable=SC2086
chroot "$root" apt-get install -y -qq $PACKAGES >"$work/apt.log" 2>&1 \
    || { tail -20 "$work/apt.log" >&2; exit 1; }
chroot "$root" apt-get clean
umount "$root/proc"
rm -f "$root/usr/sbin/policy-rc.d"

chroot "$root" dpkg-query -W waagent python3 systemd >&2
tar -C "$root" --numeric-owner -cf "$work/chroot.tar" .
mv "$work/chroot.tar" "$out"
echo "$out"
