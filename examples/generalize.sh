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
# The network configuration it installs is examples/network/ (the copies below
# are checked against those files by tests/unit/test_examples.py).
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
# What the removed agents leave behind (state, logs; "azure-firstboot deprovision"
# removes their sudoers files).
rm -rf /etc/waagent.conf /var/lib/waagent /var/log/waagent.log /var/log/azure \
       /etc/cloud /var/lib/cloud /var/log/cloud-init.log /var/log/cloud-init-output.log

# 2. Networking without cloud-init. -------------------------------------------
# cloud-init wrote this VM's network configuration, tied to its MAC address:
# a VM made from the image would not match it and get no DHCP lease at all.
# Remove what cloud-init generated (and MAC-bound NIC names); install the
# configuration of examples/network/ for the image's network stack: every Azure
# NIC matched by driver (hv_netvsc), DHCPv4 + IPv6 (router advertisements,
# DHCPv6), the primary (eth0) preferred (route metric 100, the others 200) and
# its DNS servers only; accelerated-networking VFs left alone.
for f in /etc/netplan/50-cloud-init.yaml /etc/network/interfaces.d/50-cloud-init \
         /etc/network/interfaces.d/50-cloud-init.cfg \
         /etc/NetworkManager/system-connections/cloud-init-*.nmconnection \
         /etc/sysconfig/network-scripts/ifcfg-* /etc/udev/rules.d/70-persistent-net.rules \
         /etc/systemd/network/*.network /etc/systemd/network/*.link; do
    [ -f "$f" ] || continue
    if grep -qi "cloud-init" "$f" || grep -qiE '^[[:space:]]*(MACAddress|HWADDR|PermanentMACAddress)=|ATTR\{address\}==' "$f"; then
        rm -f "$f"
        echo "generalize.sh: removed $f (written by cloud-init, or bound to this VM's MAC address)"
    fi
done
if command -v netplan >/dev/null 2>&1; then
    cat >/etc/netplan/90-azure.yaml <<'AZURE'
# azure-firstboot example: Azure's NICs with netplan (Ubuntu; rendered for
# systemd-networkd). Matched by driver (hv_netvsc), never by MAC address, never
# an accelerated-networking VF. The primary (eth0): DHCPv4, IPv6 from router
# advertisements and DHCPv6, the preferred default route (metric 100) and the DNS
# servers; the others: a less preferred default route (metric 200), no DNS.
# Install as /etc/netplan/90-azure.yaml, mode 0600.
network:
  version: 2
  ethernets:
    azure-primary:
      match:
        driver: hv_netvsc
        name: eth0
      dhcp4: true
      dhcp6: true
      accept-ra: true
      dhcp4-overrides:
        route-metric: 100
      dhcp6-overrides:
        route-metric: 100
    azure-secondary:
      match:
        driver: hv_netvsc
      dhcp4: true
      dhcp6: true
      accept-ra: true
      optional: true
      dhcp4-overrides:
        route-metric: 200
        use-dns: false
        use-domains: false
      dhcp6-overrides:
        route-metric: 200
        use-dns: false
        use-domains: false
AZURE
    chmod 600 /etc/netplan/90-azure.yaml
elif systemctl is-enabled --quiet systemd-networkd 2>/dev/null; then
    mkdir -p /etc/systemd/network
    cat >/etc/systemd/network/09-azure-primary.network <<'AZURE'
# azure-firstboot example: Azure's primary NIC (eth0) with systemd-networkd.
# Matched by driver (hv_netvsc, the synthetic NIC), never by MAC address, so it
# applies on every VM made from the image; never to an accelerated-networking
# VF (mlx4/mlx5/mana), which shares the NIC's MAC address.
# DHCPv4; IPv6 from router advertisements, with DHCPv6 when they ask for it (as
# Azure's do); the preferred default route (metric 100) and the DNS servers.
# Install in /etc/systemd/network/ (examples/generalize.sh does); "09-" sorts it
# before other files: networkd gives a NIC the first file (by name) that matches.
[Match]
Name=eth0
Driver=hv_netvsc

[Network]
DHCP=yes
IPv6AcceptRA=yes

[DHCPv4]
RouteMetric=100
UseDNS=yes

[IPv6AcceptRA]
RouteMetric=100
AZURE
    cat >/etc/systemd/network/09-azure-secondary.network <<'AZURE'
# azure-firstboot example: Azure's secondary NICs (eth1, eth2, ...) with
# systemd-networkd. Matched by driver (hv_netvsc), never by MAC address; never an
# accelerated-networking VF. DHCPv4 and IPv6 as on the primary, but a less
# preferred default route (metric 200: the primary's, 100, wins, so IMDS and the
# WireServer are reached through eth0) and no DNS servers (only the primary's).
# Not required for network-online.target. Install in /etc/systemd/network/.
[Match]
Name=!eth0
Driver=hv_netvsc

[Link]
RequiredForOnline=no

[Network]
DHCP=yes
IPv6AcceptRA=yes

[DHCPv4]
RouteMetric=200
UseDNS=no
UseDomains=no

[DHCPv6]
UseDNS=no

[IPv6AcceptRA]
RouteMetric=200
UseDNS=no
AZURE
elif systemctl is-enabled --quiet NetworkManager 2>/dev/null; then
    mkdir -p /etc/NetworkManager/system-connections /etc/NetworkManager/conf.d
    cat >/etc/NetworkManager/system-connections/azure-primary.nmconnection <<'AZURE'
# azure-firstboot example: Azure's primary NIC (eth0) with NetworkManager.
# Matched by driver (hv_netvsc), never by MAC address, never an
# accelerated-networking VF. DHCPv4; IPv6 from router advertisements with
# DHCPv6 when they ask for it; the preferred default route (metric 100) and
# the DNS servers. Install in /etc/NetworkManager/system-connections/, mode 0600.
[connection]
id=azure-primary
type=ethernet
autoconnect=true
autoconnect-priority=10

[match]
driver=hv_netvsc;
interface-name=eth0;

[ipv4]
method=auto
route-metric=100

[ipv6]
method=auto
route-metric=100
AZURE
    chmod 600 /etc/NetworkManager/system-connections/azure-primary.nmconnection
    cat >/etc/NetworkManager/system-connections/azure-secondary.nmconnection <<'AZURE'
# azure-firstboot example: Azure's secondary NICs (every hv_netvsc NIC but eth0)
# with NetworkManager: one profile active on each of them (multi-connect),
# DHCPv4 and IPv6 as on the primary, a less preferred default route (metric 200)
# and no DNS servers (only the primary's). Never an accelerated-networking VF.
# Install in /etc/NetworkManager/system-connections/, mode 0600.
[connection]
id=azure-secondary
type=ethernet
autoconnect=true
autoconnect-priority=0
multi-connect=3

[match]
driver=hv_netvsc;
interface-name=!eth0;

[ipv4]
method=auto
route-metric=200
ignore-auto-dns=true
may-fail=true

[ipv6]
method=auto
route-metric=200
ignore-auto-dns=true
may-fail=true
AZURE
    chmod 600 /etc/NetworkManager/system-connections/azure-secondary.nmconnection
    cat >/etc/NetworkManager/conf.d/90-azure-no-auto-default.conf <<'AZURE'
# azure-firstboot example: NetworkManager makes no "Wired connection N" of its
# own for an Ethernet device no profile matches (an accelerated-networking VF,
# for one): the azure-primary and azure-secondary profiles cover Azure's NICs.
# Install in /etc/NetworkManager/conf.d/.
[main]
no-auto-default=*
AZURE
elif [ -f /etc/network/interfaces ]; then
    if grep -qsE '^[[:space:]]*iface[[:space:]]+eth[0-3][[:space:]]+inet' /etc/network/interfaces /etc/network/interfaces.d/*; then
        echo "generalize.sh: /etc/network/interfaces already configures eth0..eth3; not adding examples/network/ifupdown/azure" >&2
    else
        mkdir -p /etc/network/interfaces.d /etc/dhcp/dhclient-enter-hooks.d
        cat >/etc/network/interfaces.d/azure <<'AZURE'
# azure-firstboot example: Azure's NICs with ifupdown (+ ISC dhclient).
# ifupdown matches interfaces by name only: each stanza first checks that the
# device is Azure's synthetic NIC (driver hv_netvsc), so an accelerated-networking
# VF that got one of these names (net.ifnames=0) is left alone.
# eth0, the primary: DHCPv4 with the preferred default route (metric 100) and
# the DNS servers; IPv6 from router advertisements plus DHCPv6 (Azure assigns
# the address through it; dhclient -6 runs in the background, so a network
# without IPv6 does not hold up the boot).
# eth1..eth3: DHCPv4 with a less preferred default route (metric 200); their DNS
# servers are dropped by /etc/dhcp/dhclient-enter-hooks.d/azure-dns-primary-only.
# Install as /etc/network/interfaces.d/azure (examples/generalize.sh does).

allow-hotplug eth0
iface eth0 inet dhcp
    pre-up [ "$(basename "$(readlink -f /sys/class/net/$IFACE/device/driver)")" = hv_netvsc ]
    metric 100
iface eth0 inet6 auto
    up dhclient -6 -nw -pf /run/dhclient6.$IFACE.pid -lf /var/lib/dhcp/dhclient6.$IFACE.leases $IFACE
    down dhclient -6 -x -pf /run/dhclient6.$IFACE.pid $IFACE || true

allow-hotplug eth1
iface eth1 inet dhcp
    pre-up [ "$(basename "$(readlink -f /sys/class/net/$IFACE/device/driver)")" = hv_netvsc ]
    metric 200

allow-hotplug eth2
iface eth2 inet dhcp
    pre-up [ "$(basename "$(readlink -f /sys/class/net/$IFACE/device/driver)")" = hv_netvsc ]
    metric 200

allow-hotplug eth3
iface eth3 inet dhcp
    pre-up [ "$(basename "$(readlink -f /sys/class/net/$IFACE/device/driver)")" = hv_netvsc ]
    metric 200
AZURE
        cat >/etc/dhcp/dhclient-enter-hooks.d/azure-dns-primary-only <<'AZURE'
# azure-firstboot example, sourced by dhclient-script: DNS servers and search
# domains only from the primary NIC (eth0), as cloud-init configures Azure VMs.
# Install in /etc/dhcp/dhclient-enter-hooks.d/.
case ${interface-} in
eth0) ;;
*) new_domain_name_servers= new_domain_search= new_domain_name= new_dhcp6_name_servers= new_dhcp6_domain_search= ;;
esac
AZURE
    fi
else
    echo "generalize.sh: no network stack found (netplan, systemd-networkd, NetworkManager, ifupdown):" \
         "configure DHCP for the Azure NIC (driver hv_netvsc) yourself" >&2
fi

# 3. Generalize: agent state, machine id, SSH host keys, host name, leases,
#    the build user (the account that ran this through sudo) and the sudoers
#    files of cloud-init and waagent. It refuses, changing nothing, when the
#    configuration is broken (--force would go on regardless: not here). ------
[ -n "${SUDO_USER-}" ] || echo "generalize.sh: not run through sudo: no build user to remove" >&2
azure-firstboot deprovision --user --yes

# 4. The same checks as before capture: one line per problem, and the build fails.
azure-firstboot check || { echo "generalize.sh: the image is not ready to capture (above)" >&2; exit 1; }
rm -f /root/.bash_history "$PACKAGE" "$0"
sync
echo "generalize.sh: done; now capture the image (deallocate + generalize)"
