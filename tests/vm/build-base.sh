#!/bin/bash
# Build the cached VM base root file system (Debian minbase + base-packages).
# usage: build-base.sh OUTDIR MIRROR [SUITE [EXTRA,PACKAGES]]
# SUITE: bookworm (default, Debian 12) or trixie (Debian 13); EXTRA: more packages
# (comma-separated), e.g. network-manager for the NetworkManager image.
# Called by tests/vm/harness.py, which keys the cache on a hash of this script,
# base-packages, the suite and the extra packages. Produces OUTDIR/root (the tree)
# ready for mkfs.ext4 -d.
set -euo pipefail
out=$1
mirror=$2
suite=${3:-bookworm}
extra=${4:-}
here=$(cd "$(dirname "$0")" && pwd)
pkgs=$(grep -v '^#' "$here/base-packages" | grep . | paste -sd,)
root=$out/root
mkdir -p "$out"

debootstrap --variant=minbase --include="$pkgs" "$suite" "$root" "$mirror"

inroot() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C "$@"; }

# Root on the whole virtio disk; the kernel mounts it rw (root=/dev/vda rw).
printf '/dev/vda / ext4 rw,relatime 0 1\n' > "$root/etc/fstab"
printf 'debian-vm-base\n' > "$root/etc/hostname"
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
printf 'deb %s %s main\n' "$mirror" "$suite" > "$root/etc/apt/sources.list"

# Extra packages with apt, not debootstrap: debootstrap configures its packages in
# one dpkg pass, in which network-manager's polkitd (adduser, sysusers) fails.
if [ -n "$extra" ]; then
    inroot apt-get update -q
    inroot env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $(printf '%s' "$extra" | tr , ' ')
fi

# systemd-networkd: DHCP on the NIC (net.ifnames=0 on the kernel command line -> eth0).
# QEMU's user-mode DHCP with restrict=on hands out no router; the lease's /7 subnet
# (net=168.0.0.0/7) already makes 168.63.129.16 and 169.254.169.254 on-link, and the
# explicit on-link host routes below make the image independent of the subnet size
# (as on Azure, where the DHCP lease carries routes for both addresses).
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-eth.network" <<'NET'
[Match]
Name=eth* en*

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[Route]
Destination=168.63.129.16/32
Scope=link

[Route]
Destination=169.254.169.254/32
Scope=link
NET
inroot systemctl enable systemd-networkd.service systemd-networkd-wait-online.service
# Nothing periodic or interactive in a test VM.
inroot systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
    e2scrub_reap.service fstrim.timer 2>/dev/null || true
# Root login on the serial console without a password (test VM only, no network exposure).
inroot passwd -d root >/dev/null

# Small initramfs: only what a virtio-blk ext4 root needs (faster to load under TCG).
printf 'MODULES=list\nCOMPRESS=gzip\n' > "$root/etc/initramfs-tools/conf.d/vm.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\next4\n' >> "$root/etc/initramfs-tools/modules"
inroot update-initramfs -u -k all

inroot apt-get clean
rm -rf "$root/var/lib/apt/lists/"* "$root/var/log/"*.log "$root/var/cache/debconf/"*-old
