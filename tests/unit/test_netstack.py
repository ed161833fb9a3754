"""NetworkManager and ifupdown publishing decisions, option 245 from nmcli
(pure functions of netstack.py and its stack modules net_nm.py and
net_dhclient.py; the VM matrix boots the real stacks)."""

from azure_firstboot import net_dhclient, net_nm, netstack

# nmcli 1.42 (Debian 12): nmcli -t -f GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,DHCP4 device show
NMCLI = """\
GENERAL.DEVICE:eth0
GENERAL.TYPE:ethernet
GENERAL.STATE:100 (connected)
DHCP4.OPTION[1]:broadcast_address = 10.99.0.255
DHCP4.OPTION[2]:dhcp_client_identifier = 01:52:54:00:12:34:56
DHCP4.OPTION[3]:dhcp_lease_time = 3600
DHCP4.OPTION[4]:dhcp_server_identifier = 10.99.0.1
DHCP4.OPTION[5]:expiry = 1796040000
DHCP4.OPTION[6]:ip_address = 10.99.0.57
DHCP4.OPTION[7]:private_245 = 0a:63:00:02
DHCP4.OPTION[8]:requested_host_name = 1

GENERAL.DEVICE:lo
GENERAL.TYPE:loopback
GENERAL.STATE:100 (connected (externally))

GENERAL.DEVICE:eth1
GENERAL.TYPE:ethernet
GENERAL.STATE:30 (disconnected)

GENERAL.DEVICE:eth2
GENERAL.TYPE:ethernet
GENERAL.STATE:100 (connected)

GENERAL.DEVICE:eth3
GENERAL.TYPE:ethernet
GENERAL.STATE:100 (connected (externally))
DHCP4.OPTION[1]:ip_address = 10.1.0.4
"""


def test_parse_nmcli_devices_keeps_colons_in_values():
    devices = net_nm.parse_nmcli_devices(NMCLI)
    assert [d["device"] for d in devices] == ["eth0", "lo", "eth1", "eth2", "eth3"]
    eth0 = devices[0]
    assert eth0["type"] == "ethernet" and eth0["state"] == "100 (connected)"
    assert eth0["dhcp4"]["private_245"] == "0a:63:00:02"
    assert eth0["dhcp4"]["dhcp_client_identifier"] == "01:52:54:00:12:34:56"
    assert devices[1]["state"] == "100 (connected (externally))" and devices[1]["dhcp4"] == {}


def test_parse_nmcli_devices_ignores_noise():
    assert net_nm.parse_nmcli_devices("") == []
    assert net_nm.parse_nmcli_devices("DHCP4.OPTION[1]:ip_address = 1.2.3.4\ngarbage\n") == []


def test_only_devices_nm_manages_with_dhcp_are_published():
    # lo (externally), a disconnected device, a static one (no DHCP4) and a device
    # configured by another tool (externally, even with DHCP options) are left alone
    devices = net_nm.parse_nmcli_devices(NMCLI)
    assert [d["device"] for d in net_nm.nm_dhcp_devices(devices)] == ["eth0"]


def test_option_245_from_nm_private_option():
    assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(NMCLI)) == "10.99.0.2"
    azure = NMCLI.replace("private_245 = 0a:63:00:02", "private_245 = a8:3f:81:10")
    assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(azure)) == "168.63.129.16"
    # NetworkManager driving dhclient reports it as unknown_245 (dhclient drops leading zeros)
    dh = NMCLI.replace("private_245 = 0a:63:00:02", "unknown_245 = a:63:0:2")
    assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(dh)) == "10.99.0.2"


def test_option_245_absent_or_bad():
    none = NMCLI.replace("DHCP4.OPTION[7]:private_245 = 0a:63:00:02\n", "")
    assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(none)) is None
    for bad in ("0a:63:00", "0a:63:00:02:01", "zz:63:00:02", "100:1:1:1", "7f:00:00:01",
                "ff:ff:ff:ff", "e0:00:00:01", "", "0a::00:02"):
        text = NMCLI.replace("0a:63:00:02", bad)
        assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(text)) is None, bad
    # an option 245 on lo or an external device is not NetworkManager's lease
    ext = NMCLI.replace("DHCP4.OPTION[7]:private_245 = 0a:63:00:02\n", "").replace(
        "ip_address = 10.1.0.4", "private_245 = 0a:63:00:09")
    assert net_nm.nm_option_245(net_nm.parse_nmcli_devices(ext)) is None


def test_dhclient_interfaces_split_by_ifupdown_state():
    run = ["dhclient.eth0.pid", "dhclient.eth1.pid", "dhclient6.eth0.pid", "dhclient..pid",
           "systemd", "network"]
    ours, others = net_dhclient.dhclient_interfaces(run, ["ifstate", "ifstate.eth0", "ifstate.lo"])
    assert ours == ["eth0"] and others == ["eth1"]
    assert net_dhclient.dhclient_interfaces([], ["ifstate.eth0"]) == ([], [])


def test_ifupdown_restart_unit():
    # allow-hotplug interface: its own ifup@ unit, nothing else is cycled
    assert net_dhclient.ifupdown_restart_unit("eth0", {"ifup@eth0.service": "active",
                                                 "networking.service": "active"}) \
        == "ifup@eth0.service"
    # auto interface: brought up by networking.service
    assert net_dhclient.ifupdown_restart_unit("eth0", {"ifup@eth0.service": "inactive",
                                                 "networking.service": "active"}) \
        == "networking.service"
    # neither unit holds it: never restart dhclient by hand
    assert net_dhclient.ifupdown_restart_unit("eth0", {"ifup@eth0.service": "inactive",
                                                 "networking.service": "failed"}) is None
    assert net_dhclient.ifupdown_restart_unit("eth0", {}) is None


def test_publish_is_a_no_op_under_root(tmp_path):
    from azure_firstboot.state import Paths

    paths = Paths(str(tmp_path))
    assert netstack.publish_hostname(paths, "vm1") == "not published (--root)"
    assert net_nm.nm_lease_endpoint(paths) is None


def test_dhclient_conf_detection():
    assert net_dhclient.dhclient_conf_sends_hostname("send host-name = gethostname();\n")
    assert not net_dhclient.dhclient_conf_sends_hostname("#send host-name \"x\";\nrequest subnet-mask;\n")
