import pytest

from azure_firstboot import config


def test_defaults_when_missing(tmp_path):
    values, problems = config.load(str(tmp_path / "absent.conf"))
    assert problems == []
    assert values[("wireserver", "endpoint")] == "auto"
    assert values[("provisioning", "deadline")] == 1200
    assert values[("provisioning", "assume_azure")] is False


def test_parse_all_keys():
    text = """
# comment
; another
[wireserver]
endpoint = 10.1.2.3:8080
[IMDS]
endpoint: 127.0.0.1:9
timeout = 5.5
[provisioning]
deadline = 60
network_timeout = 10
assume_azure = yes
[hostname]
enabled = no
publish = off
"""
    v = config.parse(text)
    assert v[("wireserver", "endpoint")] == "10.1.2.3:8080"
    assert v[("imds", "endpoint")] == "127.0.0.1:9"
    assert v[("imds", "timeout")] == 5.5
    assert v[("provisioning", "deadline")] == 60
    assert v[("provisioning", "assume_azure")] is True
    assert v[("hostname", "enabled")] is False and v[("hostname", "publish")] is False


@pytest.mark.parametrize("text, fragment", [
    ("[nope]\n", "unknown section [nope]"),
    ("[wireserver]\nendpint = auto\n", "unknown key 'endpint'"),
    ("endpoint = auto\n", "outside of any [section]"),
    ("[provisioning]\ndeadline = soon\n", "bad value for provisioning.deadline"),
    ("[provisioning]\ndeadline = -1\n", "bad value"),
    ("[provisioning]\nassume_azure = maybe\n", "expected yes or no"),
    ("[wireserver]\nendpoint = 1.2.3.4:0\n", "port must be a number from 1 to 65535"),
    ("[wireserver]\nendpoint = auto\nendpoint = auto\n", "set twice"),
    ("[wireserver\n", "malformed section"),
    ("[hostname]\njunk\n", "expected 'key = value'"),
])
def test_errors_name_the_line(text, fragment):
    with pytest.raises(config.ConfigError) as info:
        config.parse(text, "f.conf")
    message = str(info.value)
    assert fragment in message and message.startswith("f.conf:") and "\n" not in message


def test_unreadable_and_binary(tmp_path):
    bad = tmp_path / "b.conf"
    bad.write_bytes(b"\xff\xfe\n[imds]\ntimeout = 5\nendpoint = \xe9\n")
    values, problems = config.load(str(bad))
    expected = config.defaults()
    expected[("imds", "timeout")] = 5.0
    assert values == expected
    assert problems == ["%s:1: not UTF-8 text" % bad, "%s:4: not UTF-8 text" % bad]
