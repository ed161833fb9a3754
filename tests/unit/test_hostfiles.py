from azure_firstboot import hostfiles


def test_hosts_line_follows_the_name():
    text = "127.0.0.1\tlocalhost\n127.0.1.1\tdebian.example debian # old\n::1 localhost\n"
    assert hostfiles.hosts_with_name(text, "vm1") == "127.0.0.1\tlocalhost\n127.0.1.1\tvm1\n::1 localhost\n"
    assert hostfiles.hosts_with_name("127.0.0.1 localhost\n", "vm1") is None
