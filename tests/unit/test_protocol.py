"""The wire format as pure functions: no sockets, no files."""

import pytest

from azure_firstboot import protocol as p

GOAL_STATE = b"""<?xml version="1.0" encoding="utf-8"?>
<GoalState xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="goalstate10.xsd">
  <Version>2010-12-15</Version>
  <Incarnation>3</Incarnation>
  <Machine><ExpectedState>Started</ExpectedState><LBProbePorts><Port>16001</Port></LBProbePorts></Machine>
  <Container>
    <ContainerId>7b324f53-983a-43bc-b919-1775d6077608</ContainerId>
    <RoleInstanceList>
      <RoleInstance>
        <InstanceId>fbb84507-46cd-4f4e-bd78-a2edaa9d059b._vm1</InstanceId>
        <State>Started</State>
        <Configuration>
          <HostingEnvironmentConfig>http://168.63.129.16:80/machine/a/b?comp=config&amp;type=hostingEnvironmentConfig&amp;incarnation=3</HostingEnvironmentConfig>
        </Configuration>
      </RoleInstance>
    </RoleInstanceList>
  </Container>
</GoalState>"""


def test_goal_state_ids():
    gs = p.parse_goal_state(GOAL_STATE)
    assert (gs.incarnation, gs.container_id, gs.instance_id) == (
        "3", "7b324f53-983a-43bc-b919-1775d6077608", "fbb84507-46cd-4f4e-bd78-a2edaa9d059b._vm1")


def test_goal_state_order_whitespace_unknown_elements_and_prefixes():
    doc = (b"<GoalState><Extra a='1'><Incarnation>99</Incarnation></Extra>"
           b"<Container>\n  <RoleInstanceList><RoleInstance><Foo/>"
           b"<InstanceId>\n\t i-1 \n</InstanceId></RoleInstance></RoleInstanceList>"
           b"<ContainerId> c-1 </ContainerId></Container><Incarnation> 7 </Incarnation></GoalState>")
    gs = p.parse_goal_state(doc)
    # the nested Incarnation under <Extra> is not GoalState/Incarnation
    assert (gs.incarnation, gs.container_id, gs.instance_id) == ("7", "c-1", "i-1")


def test_goal_state_without_role_instance():
    gs = p.parse_goal_state(b"<GoalState><Incarnation>1</Incarnation><Container>"
                            b"<ContainerId>c</ContainerId></Container></GoalState>")
    assert gs.instance_id is None


@pytest.mark.parametrize("doc, message", [
    (b"<GoalState><Incarnation>1</Incarnation>", "malformed XML"),
    (b"<GoalState><Container><ContainerId>c</ContainerId></Container></GoalState>", "no incarnation"),
    (b"<GoalState><Incarnation>x1</Incarnation><Container><ContainerId>c</ContainerId></Container></GoalState>",
     "not a number"),
    (b"<GoalState><Incarnation>1</Incarnation><Container><ContainerId>a\tb</ContainerId></Container></GoalState>",
     "unexpected characters"),
    (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
     b"<GoalState><Incarnation>&lol2;</Incarnation></GoalState>", "DOCTYPE"),
    (b'<!DOCTYPE GoalState SYSTEM "http://example.invalid/x.dtd"><GoalState/>', "DOCTYPE"),
])
def test_goal_state_rejects(doc, message):
    with pytest.raises(p.ProtocolError, match=message):
        p.parse_goal_state(doc)


def test_error_body():
    body = (b'<?xml version="1.0" encoding="utf-8"?><Error xmlns:xsi="x" xmlns:xsd="y"><Code>ResourceNotAvailable'
            b"</Code><Message>The resource requested is no longer available. Please refresh your cache.</Message>"
            b"<Details></Details></Error>")
    assert p.parse_error_body(body).startswith("ResourceNotAvailable: The resource requested")
    assert p.parse_error_body(b"not xml") == ""


def _health_fields(doc):
    fields = {
        ("Health", "GoalStateIncarnation"): "incarnation",
        ("Health", "Container", "ContainerId"): "container",
        ("Health", "Container", "RoleInstanceList", "Role", "InstanceId"): "instance",
        ("Health", "Container", "RoleInstanceList", "Role", "Health", "State"): "state",
        ("Health", "Container", "RoleInstanceList", "Role", "Health", "Details", "SubStatus"): "sub",
        ("Health", "Container", "RoleInstanceList", "Role", "Health", "Details", "Description"): "desc",
    }
    return p._collect(doc, fields)


def test_health_ready_round_trip():
    gs = p.GoalState("3", "c-1", "i-1")
    doc = p.health_document(gs)
    assert doc.startswith(b'<?xml version="1.0" encoding="utf-8"?><Health')
    assert _health_fields(doc) == {"incarnation": "3", "container": "c-1", "instance": "i-1", "state": "Ready"}


def test_health_failure_is_escaped_and_cut_before_escaping():
    gs = p.GoalState("3", "c-1", "i-1")
    reason = "bad <name> & \"$(reboot)\"\x01 " + "x" * 1000
    doc = p.health_document(gs, reason)
    fields = _health_fields(doc)
    assert fields["state"] == "NotReady" and fields["sub"] == "ProvisioningFailed"
    assert fields["desc"].startswith('bad <name> & "$(reboot)"? x')
    assert len(fields["desc"]) == p.DESCRIPTION_MAX
    assert b"<name>" not in doc and b"&lt;name&gt;" in doc


def test_imds_hostname_is_computer_name_not_name():
    doc = b'{"compute": {"name": "vmss_3", "vmId": "ABC", "osProfile": {"computerName": "vmss000003"}}}'
    assert p.parse_imds_instance(doc) == ("vmss000003", "abc")


@pytest.mark.parametrize("doc", [b"{", b"[]", b'{"compute": 1}', b'{"compute": {"name": "x"}}',
                                 b'{"compute": {"osProfile": {"computerName": ""}}}',
                                 b'{"compute": {"osProfile": {"computerName": 5}}}', b"\xff"])
def test_imds_rejects(doc):
    with pytest.raises(p.ProtocolError):
        p.parse_imds_instance(doc)


@pytest.mark.parametrize("name", ["vm1", "a", "web-01.example", "A" * 63, "a" * 32 + "." + "b" * 31])
def test_valid_hostnames(name):
    assert p.hostname_problem(name) is None


@pytest.mark.parametrize("name", ["a_b", "$(reboot)", "-a", "a-", "a..b", "", ".", "a" * 64,
                                  "a" * 300, "x y", "vm;rm -rf /", "ünï", "a.", "a\nb"])
def test_invalid_hostnames(name):
    problem = p.hostname_problem(name)
    assert problem and "\n" not in problem


def test_vm_id_and_gen1_swap():
    assert p.normalize_vm_id(" 4A3B2C1D-0000-1111-2222-333344445555\n") == "4a3b2c1d-0000-1111-2222-333344445555"
    assert p.normalize_vm_id("not-a-uuid") is None
    vm = "4a3b2c1d-0a0b-1c1d-2222-333344445555"
    assert p.gen1_swap(vm) == "1d2c3b4a-0b0a-1d1c-2222-333344445555"
    assert p.gen1_swap(p.gen1_swap(vm)) == vm
    assert p.same_vm(vm, vm) and p.same_vm(vm, p.gen1_swap(vm))
    assert not p.same_vm(vm, "00000000-0000-0000-0000-000000000000")


def test_networkd_lease():
    text = "# This is private data. Do not parse.\nADDRESS=10.0.0.4\nOPTION_245=A83F8110\n"
    assert p.networkd_option_245(text) == "168.63.129.16"
    assert p.networkd_option_245("ADDRESS=10.0.0.4\n") is None
    assert p.networkd_option_245("OPTION_245=zz\n") is None


DHCLIENT = """
lease {
  interface "eth0";
  option unknown-245 a8:3f:81:10;
  expire 4 2026/11/26 10:00:00;
}
lease {
  interface "eth0";
  option unknown-245 a:0:0:5;
  expire 4 2026/11/26 14:00:00;
}
lease {
  interface "eth0";
  option routers 10.0.0.1;
  expire never;
}
"""


def test_dhclient_lease_last_unexpired():
    import calendar

    noon = calendar.timegm((2026, 11, 26, 12, 0, 0, 0, 0, 0))
    assert p.dhclient_option_245(DHCLIENT, noon) == "10.0.0.5"
    assert p.dhclient_option_245(DHCLIENT, noon - 3 * 3600) == "10.0.0.5"
    assert p.dhclient_option_245(DHCLIENT, noon + 3 * 3600) is None


def test_dhclient_lease_escaped_string_form():
    text = 'lease {\n option unknown-245 "\\250?\\201\\020";\n expire never;\n}\n'
    assert p.dhclient_option_245(text, 0) == "168.63.129.16"


@pytest.mark.parametrize("text, expected", [("1.2.3.4", ("1.2.3.4", 80)), ("1.2.3.4:8080", ("1.2.3.4", 8080)),
                                             ("localhost:1", ("localhost", 1))])
def test_split_endpoint(text, expected):
    assert p.split_endpoint(text) == expected


@pytest.mark.parametrize("text", ["", ":80", "1.2.3.4:0", "1.2.3.4:99999", "a b", "1.2.3.4:x", "$(x):1"])
def test_split_endpoint_rejects(text):
    with pytest.raises(ValueError):
        p.split_endpoint(text)


# ----------------------------------------- report-ready's retry rules (issue 18)

def test_retry_rules_are_data_covering_every_error_status():
    from azure_firstboot import report_ready as rr, transport

    assert rr.OK | rr.REFETCH | rr.RETRY | rr.FAIL >= transport.ERROR_STATUSES
    assert not (rr.REFETCH & rr.RETRY) and not ((rr.REFETCH | rr.RETRY) & rr.FAIL)
    actions = {s: rr.answer_action(s) for s in (200, 201, 202, 204, 301, 400, 401, 403, 404, 405,
                                                 408, 410, 413, 429, 500, 501, 502, 503, 504, 505, 507)}
    assert actions == {200: "ok", 201: "ok", 202: "ok", 204: "fail", 301: "fail", 400: "refetch",
                       401: "fail", 403: "retry", 404: "retry", 405: "fail", 408: "retry",
                       410: "refetch", 413: "fail", 429: "retry", 500: "retry", 501: "retry",
                       502: "retry", 503: "retry", 504: "retry", 505: "fail", 507: "retry"}


def test_refetch_delay_grows_and_is_capped():
    from azure_firstboot import report_ready as rr

    delays = [rr.refetch_delay(n) for n in range(1, 12)]
    assert delays[:4] == [1.0, 2.0, 4.0, 8.0]
    assert all(b >= a for a, b in zip(delays, delays[1:])) and max(delays) == rr.REFETCH_MAX
    assert rr.refetch_delay(10 ** 6) == rr.REFETCH_MAX and rr.refetch_delay(0) == rr.REFETCH_FIRST
