#!/bin/sh
# Turn a running Azure build VM into an image that provisions itself with
# azure-firstboot, then generalize it. Run as root as the LAST step before
# capture (Packer: the last provisioner; az CLI: over ssh, then
# "az vm deallocate" + "az vm generalize"). After it, nobody can log in with
# the build user again.
#
#   sudo PACKAGE=/tmp/azure-firstboot_0.1.0_all.deb sh generalize.sh
#
# PACKAGE  the azure-firstboot .deb or .rpm, already copied to the VM
# Run it through sudo as the build user (Packer's shell provisioner does):
# "azure-firstboot deprovision --user" removes the account that ran sudo.
#
# Do NOT run "waagent -deprovision" here: installing azure-firstboot removes
# waagent, and "azure-firstboot deprovision" does what it did (without
# writing a DHCP host name into the image).
set -eu

: "${PACKAGE:?set PACKAGE to the path of the azure-firstboot .deb or .rpm}"
[ "$(id -u)" = 0 ] || { echo "generalize.sh: run as root" >&2; exit 1; }
[ -f "$PACKAGE" ] || { echo "generalize.sh: $PACKAGE: no such file" >&2; exit 1; }

# 1. Install the agent, replacing waagent; purge cloud-init. -----------------
case $PACKAGE in
*.deb)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "$(readlink -f "$PACKAGE")"   # Conflicts: waagent, walinuxagent
    purge=
    for p in waagent walinuxagent cloud-init; do
        status=$(dpkg-query -W -f '${db:Status-Status}' "$p" 2>/dev/null || true)
        case $status in installed|half-installed|config-files|unpacked) purge="$purge $p" ;; esac
    done
    # shellcheck disable=SC2086
    [ -z "$purge" ] || apt-get purge -y $purge
    ;;
*.rpm)
    if rpm -q WALinuxAgent >/dev/null 2>&1; then
        dnf -y swap WALinuxAgent "$(readlink -f "$PACKAGE")"   # Conflicts: WALinuxAgent
    else
        dnf -y install "$(readlink -f "$PACKAGE")"
    fi
    if rpm -q cloud-init >/dev/null 2>&1; then dnf -y remove cloud-init; fi
    ;;
*)
    echo "generalize.sh: PACKAGE must be a .deb or an .rpm" >&2; exit 1 ;;
esac
# What the removed agents leave behind (state, logs, their sudoers files).
rm -rf /etc/waagent.conf /var/lib/waagent /var/log/waagent.log /var/log/azure \
       /etc/cloud /var/lib/cloud /var/log/cloud-init.log /var/log/cloud-init-output.log \
       /etc/sudoers.d/waagent /etc/sudoers.d/90-cloud-init-users

# 2. Networking without cloud-init. -------------------------------------------
# cloud-init wrote this VM's network configuration, tied to its MAC address:
# a VM made from the image would not match it and get no DHCP lease at all.
# Remove what cloud-init generated; make sure the NIC gets DHCP anyway.
for f in /etc/netplan/50-cloud-init.yaml /etc/network/interfaces.d/50-cloud-init \
         /etc/network/interfaces.d/50-cloud-init.cfg \
         /etc/NetworkManager/system-connections/cloud-init-*.nmconnection \
         /etc/sysconfig/network-scripts/ifcfg-*; do
    if [ -f "$f" ] && grep -qi "cloud-init" "$f"; then
        rm -f "$f"
        echo "generalize.sh: removed $f (written by cloud-init)"
    fi
done
if command -v netplan >/dev/null 2>&1; then
    # Azure's synthetic NIC (hv_netvsc); never the accelerated-networking VF
    # that shares its MAC address.
    cat >/etc/netplan/90-azure-dhcp.yaml <<'YAML'
network:
  version: 2
  ethernets:
    azure:
      match:
        driver: hv_netvsc
      dhcp4: true
YAML
    chmod 600 /etc/netplan/90-azure-dhcp.yaml
elif [ -d /etc/systemd/network ] && systemctl is-enabled --quiet systemd-networkd 2>/dev/null; then
    printf '[Match]\nDriver=hv_netvsc\n\n[Network]\nDHCP=ipv4\n' >/etc/systemd/network/90-azure-dhcp.network
elif [ -f /etc/network/interfaces ] && ! grep -qs "inet dhcp" /etc/network/interfaces /etc/network/interfaces.d/*; then
    printf 'allow-hotplug eth0\niface eth0 inet dhcp\n' >/etc/network/interfaces.d/eth0
fi
# (NetworkManager without a profile brings every Ethernet device up with DHCP.)

# 3. Generalize: agent state, machine id, SSH host keys, host name, leases,
#    and the build user (the account that ran this through sudo). -------------
[ -n "${SUDO_USER-}" ] || echo "generalize.sh: not run through sudo: no build user to remove" >&2
azure-firstboot deprovision --user --force
rm -f /root/.bash_history "$PACKAGE" "$0"
sync
echo "generalize.sh: done; now capture the image (deallocate + generalize)"
