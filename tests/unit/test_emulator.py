"""The fabric emulator itself, over real loopback sockets (http.client, not the agent)."""

import errno
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from xml.etree import ElementTree

import pytest

import fabric_emulator
from fabric_emulator import Fabric

EMULATOR = os.path.abspath(fabric_emulator.__file__)
WS_HEADERS = {"x-ms-version": "2012-11-30", "x-ms-agent-name": "emulator-test/1"}
GONE = "The resource requested is no longer available. Please refresh your cache."


# ------------------------------------------------------------------ helpers

@pytest.fixture
def fabric():
    made = []

    def make(**scenario):
        fab = Fabric(scenario).start()
        made.append(fab)
        return fab

    yield make
    for fab in made:
        fab.stop()


def call(address, method, path, body=None, headers=None, timeout=5):
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def ws(fab, method, path, body=None, headers=None, version=True):
    hdrs = dict(WS_HEADERS) if version else {}
    if body is not None:
        hdrs["Content-Type"] = "text/xml;charset=utf-8"
    hdrs.update(headers or {})
    return call(fab.wireserver_address, method, path, body, hdrs)


def goal_state(fab, path="/machine/?comp=goalstate"):
    return ws(fab, "GET", path)


def imds(fab, path, headers=None, metadata=True):
    hdrs = {"Metadata": "true"} if metadata else {}
    hdrs.update(headers or {})
    return call(fab.imds_address, "GET", path, None, hdrs)


def health_xml(ids, state="Ready", substatus=None, description=None, incarnation=None):
    details = ""
    if substatus is not None:
        details = "<Details><SubStatus>%s</SubStatus>%s</Details>" % (
            substatus, "" if description is None else "<Description>%s</Description>" % description)
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<Health xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema">'
        "<GoalStateIncarnation>%s</GoalStateIncarnation><Container><ContainerId>%s</ContainerId>"
        "<RoleInstanceList><Role><InstanceId>%s</InstanceId><Health><State>%s</State>%s</Health>"
        "</Role></RoleInstanceList></Container></Health>"
        % (ids["incarnation"] if incarnation is None else incarnation, ids["container_id"],
           ids["instance_id"], state, details)).encode("utf-8")


def post_health(fab, body, path="/machine?comp=health"):
    return ws(fab, "POST", path, body)


def parse_gs(data):
    root = ElementTree.fromstring(data)
    inst = root.find("Container/RoleInstanceList/RoleInstance/InstanceId")
    return {"incarnation": int(root.find("Incarnation").text.strip()),
            "container_id": root.find("Container/ContainerId").text.strip(),
            "instance_id": None if inst is None else inst.text.strip()}, root


def error_code(data):
    root = ElementTree.fromstring(data)
    assert root.tag == "Error"
    return root.find("Code").text, root.find("Message").text


# ------------------------------------------------------------------ WireServer documents

def test_goal_state_document(fabric):
    fab = fabric()
    for path in ("/machine/?comp=goalstate", "/machine?comp=goalstate"):
        status, headers, data = goal_state(fab, path)
        assert status == 200
        assert headers["content-type"].startswith("text/xml")
        assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
        assert b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"' in data
        assert b'xsi:noNamespaceSchemaLocation="goalstate10.xsd"' in data
        assert b"&amp;type=hostingEnvironmentConfig&amp;incarnation=1" in data
        ids, root = parse_gs(data)
        assert ids == fab.goal_state_ids()
        assert ids["instance_id"].endswith("._myvm")
        assert root.find("Version").text == "2012-11-30"
        assert root.find("Machine/ExpectedState").text == "Started"
        assert root.find("Machine/LBProbePorts/Port").text == "16001"
        assert root.find("Container/RoleInstanceList/RoleInstance/State").text == "Started"


def test_config_urls_point_at_the_emulator_and_serve_documents(fabric):
    fab = fabric()
    _s, _h, data = goal_state(fab)
    _ids, root = parse_gs(data)
    conf = root.find("Container/RoleInstanceList/RoleInstance/Configuration")
    roots = {}
    for tag in ("HostingEnvironmentConfig", "SharedConfig", "ExtensionsConfig"):
        url = conf.find(tag).text
        assert url.startswith("http://%s/machine/" % fab.wireserver_address)
        assert "&amp;" not in url
        rest = url[len("http://" + fab.wireserver_address):]
        status, _h, doc = ws(fab, "GET", rest)
        assert status == 200, tag
        roots[tag] = ElementTree.fromstring(doc)
    hec = roots["HostingEnvironmentConfig"]
    assert hec.tag == "HostingEnvironmentConfig"
    assert hec.find("Incarnation").get("instance") == "_myvm"
    assert hec.find("Role").get("name") and hec.find("Deployment").get("name")
    shared = roots["SharedConfig"]
    assert shared.find("Instances/Instance").get("id") == shared.find("Incarnation").get("instance")
    assert shared.find("Instances/Instance").get("address") == "10.0.0.4"
    assert roots["ExtensionsConfig"].tag == "Extensions"
    # stale config URL after an incarnation change -> 410
    fab.configure(incarnation=2)
    status, _h, doc = ws(fab, "GET", conf.find("SharedConfig").text.split(fab.wireserver_address, 1)[1])
    assert status == 410 and error_code(doc)[0] == "ResourceNotAvailable"


def test_config_url_base_override(fabric):
    fab = fabric(config_url_base="http://168.63.129.16:80")
    _s, _h, data = goal_state(fab)
    assert b"<SharedConfig>http://168.63.129.16:80/machine/" in data


def test_versions_document(fabric):
    fab = fabric()
    status, _h, data = ws(fab, "GET", "/?comp=versions", version=False)
    assert status == 200
    root = ElementTree.fromstring(data)
    assert root.tag == "Versions"
    assert root.find("Preferred/Version").text
    assert "2012-11-30" in [v.text for v in root.findall("Supported/Version")]


def test_goal_state_requires_version_header(fabric):
    fab = fabric()
    status, _h, data = ws(fab, "GET", "/machine/?comp=goalstate", version=False)
    assert status == 400 and error_code(data)[0] == "MissingRequiredHeader"
    fab.configure(require_version_header=False)
    assert ws(fab, "GET", "/machine/?comp=goalstate", version=False)[0] == 200


def test_unknown_paths_and_methods(fabric):
    fab = fabric()
    assert ws(fab, "GET", "/machine/?comp=nosuch")[0] == 404
    assert ws(fab, "GET", "/machine?comp=health")[0] == 405
    assert ws(fab, "POST", "/machine/?comp=goalstate", b"x")[0] == 405


# ------------------------------------------------------------------ health validation

def test_health_ready_accepted_on_both_paths(fabric):
    fab = fabric()
    ids = fab.goal_state_ids()
    for path in ("/machine?comp=health", "/machine/?comp=health"):
        status, headers, data = post_health(fab, health_xml(ids), path)
        assert status == 200 and data == b"" and headers["content-length"] == "0"
    reports = fab.health_reports()
    assert len(reports) == 2
    r = reports[0]
    assert (r["state"], r["substatus"], r["description"]) == ("Ready", None, None)
    assert (r["incarnation"], r["container_id"], r["instance_id"]) == (
        ids["incarnation"], ids["container_id"], ids["instance_id"])


def test_health_not_ready_with_details(fabric):
    fab = fabric()
    ids = fab.goal_state_ids()
    desc = "hostname: invalid name &lt;a_b&gt; &amp; more"
    status, _h, _d = post_health(fab, health_xml(ids, "NotReady", "ProvisioningFailed", desc))
    assert status == 200
    r = fab.health_reports()[-1]
    assert r["state"] == "NotReady" and r["substatus"] == "ProvisioningFailed"
    assert r["description"] == "hostname: invalid name <a_b> & more"


def test_health_whitespace_and_no_namespaces_accepted(fabric):
    fab = fabric()
    ids = fab.goal_state_ids()
    body = ("<Health>\n  <GoalStateIncarnation> %d </GoalStateIncarnation>\n  <Container>\n"
            "    <ContainerId>%s</ContainerId>\n    <RoleInstanceList><Role>\n"
            "      <InstanceId>%s</InstanceId>\n      <Health><State>Ready</State></Health>\n"
            "    </Role></RoleInstanceList>\n  </Container>\n</Health>\n"
            % (ids["incarnation"], ids["container_id"], ids["instance_id"]))
    assert post_health(fab, body.encode())[0] == 200


@pytest.mark.parametrize("mutate", [
    lambda b: b[:-10],                                                    # truncated XML
    lambda b: b"not xml at all",
    lambda b: b"",
    lambda b: b.replace(b"<Health xmlns", b"<Healthy xmlns").replace(b"</Health></Role>", b"</Health></Role>")
               .replace(b"</Container></Health>", b"</Container></Healthy>"),
    lambda b: b.replace(b"<State>Ready</State>", b"<State>Healthy</State>"),
    lambda b: b.replace(b"<State>Ready</State>", b""),
    lambda b: b.replace(b"<GoalStateIncarnation>1</GoalStateIncarnation>", b""),
    lambda b: b.replace(b"<GoalStateIncarnation>1<", b"<GoalStateIncarnation>one<"),
    lambda b: b.replace(b"<ContainerId>", b"<ContainerID>").replace(b"</ContainerId>", b"</ContainerID>"),
    lambda b: b.replace(b"<InstanceId>", b"<Instance>").replace(b"</InstanceId>", b"</Instance>"),
    lambda b: b.replace(b"</State>", b"</State><Details><SubStatus>Broken</SubStatus></Details>"),
    lambda b: b.replace(b"</State>", b"</State><Details><Description>no substatus</Description></Details>"),
    lambda b: b.replace(b"<?xml version=\"1.0\" encoding=\"utf-8\"?>",
                        b'<?xml version="1.0"?><!DOCTYPE Health [<!ENTITY a "b">]>'),
], ids=["truncated", "garbage", "empty", "wrong-root", "bad-state", "no-state", "no-incarnation",
        "non-numeric-incarnation", "no-container-id", "no-instance-id", "bad-substatus",
        "details-without-substatus", "doctype"])
def test_health_malformed_is_400(fabric, mutate):
    fab = fabric()
    body = mutate(health_xml(fab.goal_state_ids()))
    status, _h, data = post_health(fab, body)
    assert status == 400
    assert error_code(data)[0] == "BadRequest"
    assert fab.health_reports() == []
    assert fab.requests()[-1]["fault"] == "invalid_health"


def test_health_description_limit(fabric):
    fab = fabric()
    ids = fab.goal_state_ids()
    assert post_health(fab, health_xml(ids, "NotReady", "ProvisioningFailed", "é" * 2048))[0] == 200
    status, _h, _d = post_health(fab, health_xml(ids, "NotReady", "ProvisioningFailed", "é" * 2049))
    assert status == 500
    assert len(fab.health_reports()) == 1


def test_health_stale_incarnation_is_410_with_error_body(fabric):
    fab = fabric(incarnation=3)
    ids = fab.goal_state_ids()
    status, headers, data = post_health(fab, health_xml(ids, incarnation=2))
    assert status == 410
    assert headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(data)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert root.tag == "Error"
    assert root.find("Code").text == "ResourceNotAvailable"
    assert root.find("Message").text == GONE
    assert root.find("Details") is not None
    assert fab.health_reports() == []


def test_health_stale_versus_unknown_container(fabric):
    fab = fabric()
    old = fab.goal_state_ids()
    fab.configure(container_id="11111111-1111-1111-1111-111111111111")
    new = fab.goal_state_ids()
    assert new["container_id"] != old["container_id"]
    stale = dict(new, container_id=old["container_id"])
    assert post_health(fab, health_xml(stale))[0] == 410
    unknown = dict(new, container_id="99999999-9999-9999-9999-999999999999")
    assert post_health(fab, health_xml(unknown))[0] == 400
    unknown = dict(new, instance_id="nobody._x")
    assert post_health(fab, health_xml(unknown))[0] == 400
    assert post_health(fab, health_xml(new))[0] == 200


def test_bump_incarnation_on_health(fabric):
    fab = fabric(bump_incarnation_on_health=1)
    _s, _h, data = goal_state(fab)
    ids, _root = parse_gs(data)
    status, _h, body = post_health(fab, health_xml(ids))
    assert status == 410 and error_code(body) == ("ResourceNotAvailable", GONE)
    assert fab.goal_state_ids()["incarnation"] == ids["incarnation"] + 1
    assert fab.goal_state_ids()["container_id"] == ids["container_id"]
    assert fab.requests()[-1]["fault"] == "bump_incarnation,stale_health"
    _s, _h, data = goal_state(fab)
    fresh, _root = parse_gs(data)
    assert fresh["incarnation"] == ids["incarnation"] + 1
    assert post_health(fab, health_xml(fresh))[0] == 200
    assert [r["incarnation"] for r in fab.health_reports()] == [fresh["incarnation"]]


def test_bump_incarnation_with_container_change(fabric):
    fab = fabric(bump_incarnation_on_health=2, bump_container=True)
    ids = fab.goal_state_ids()
    assert post_health(fab, health_xml(ids))[0] == 410
    ids2 = fab.goal_state_ids()
    assert ids2["container_id"] != ids["container_id"]
    assert post_health(fab, health_xml(ids2))[0] == 410
    ids3 = fab.goal_state_ids()
    assert ids3["incarnation"] == ids["incarnation"] + 2
    assert post_health(fab, health_xml(ids3))[0] == 200


# ------------------------------------------------------------------ WireServer faults

def test_status_sequences_with_retry_after(fabric):
    fab = fabric(goalstate_statuses=[[503, {"Retry-After": "1"}], 503, [429, {}, "slow down"]],
                 health_statuses=[500], versions_statuses=[404])
    got = []
    for _ in range(4):
        status, headers, data = goal_state(fab)
        got.append((status, headers.get("retry-after")))
    assert got == [(503, "1"), (503, None), (429, None), (200, None)]
    assert ws(fab, "GET", "/?comp=versions")[0] == 404
    assert ws(fab, "GET", "/?comp=versions")[0] == 200
    ids = fab.goal_state_ids()
    status, _h, data = post_health(fab, health_xml(ids))
    assert status == 500 and error_code(data)[0] == "InternalError"
    assert fab.health_reports() == []
    assert post_health(fab, health_xml(ids))[0] == 200
    faults = [r["fault"] for r in fab.requests("wireserver")]
    assert faults[:4] == ["status_sequence"] * 3 + [None]
    assert fab.requests()[2]["status"] == 429


def test_status_sequence_drop_entry_and_200_entry(fabric):
    fab = fabric(goalstate_statuses=["drop", 200, 503])
    with pytest.raises(http.client.RemoteDisconnected):
        goal_state(fab)
    assert goal_state(fab)[0] == 200
    assert goal_state(fab)[0] == 503
    assert goal_state(fab)[0] == 200


def test_roleinstance_missing(fabric):
    fab = fabric(roleinstance_missing=2)
    seen = []
    for _ in range(3):
        status, _h, data = goal_state(fab)
        assert status == 200
        ids, root = parse_gs(data)
        assert root.find("Container/ContainerId") is not None
        seen.append(root.find("Container/RoleInstanceList") is not None)
    assert seen == [False, False, True]


def test_ws_delay(fabric):
    fab = fabric(ws_delay=0.3)
    start = time.monotonic()
    assert goal_state(fab)[0] == 200
    assert time.monotonic() - start >= 0.3
    assert fab.requests()[0]["fault"] == "delay"


def test_ws_drop(fabric):
    fab = fabric(ws_drop=2)
    for _ in range(2):
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError)):
            goal_state(fab)
    assert goal_state(fab)[0] == 200
    recs = fab.requests("wireserver")
    assert [(r["status"], r["fault"]) for r in recs] == [(None, "drop"), (None, "drop"), (200, None)]


def test_ws_refuse_for_really_refuses(fabric):
    fab = fabric(ws_refuse_for=0.6)
    host, port = fab.wireserver_address.rsplit(":", 1)
    assert int(port) > 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()
    assert imds(fab, "/metadata/versions")[0] == 200      # IMDS is not affected
    assert fab.wait_listening("wireserver", 5)
    assert fab.now() >= 0.6
    assert goal_state(fab)[0] == 200
    assert fab.wireserver_address == "%s:%s" % (host, port)


@pytest.mark.parametrize("count", [None, 1])
def test_goalstate_body_count(fabric, count):
    fab = fabric(goalstate_body="malformed", goalstate_body_count=count)
    for _ in range(2):
        _s, _h, data = goal_state(fab)
    if count is None:
        with pytest.raises(ElementTree.ParseError):
            ElementTree.fromstring(data)
    else:
        parse_gs(data)


def test_goalstate_body_truncated(fabric):
    fab = fabric(goalstate_body="truncated")
    with pytest.raises(http.client.IncompleteRead):
        goal_state(fab)
    rec = fab.requests()[0]
    assert rec["status"] == 200 and rec["fault"] == "goalstate_body:truncated"


def test_goalstate_body_malformed(fabric):
    fab = fabric(goalstate_body="malformed")
    status, _h, data = goal_state(fab)
    assert status == 200
    with pytest.raises(ElementTree.ParseError):
        ElementTree.fromstring(data)


def test_goalstate_body_oversized_is_streamed(fabric):
    fab = fabric(goalstate_body="oversized", oversized_bytes=3 * 1024 * 1024)
    host, port = fab.wireserver_address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.request("GET", "/machine/?comp=goalstate", headers=WS_HEADERS)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Length") is None
    head = resp.read(2 * 1024 * 1024 + 1)       # a capped reader stops here
    assert len(head) == 2 * 1024 * 1024 + 1
    conn.close()
    # and in full it is a valid (if silly) goal state
    fab.configure(oversized_bytes=2 * 1024 * 1024 + 100)
    _s, _h, data = goal_state(fab)
    assert len(data) > 2 * 1024 * 1024
    assert parse_gs(data)[0] == fab.goal_state_ids()


def test_goalstate_body_doctype_bomb(fabric):
    fab = fabric(goalstate_body="doctype_bomb")
    status, _h, data = goal_state(fab)
    assert status == 200
    assert b"<!DOCTYPE GoalState [" in data and data.count(b"<!ENTITY") == 10
    assert b"<Version>&lol9;</Version>" in data
    assert len(data) < 10000


def test_goalstate_body_unknown_elements_still_valid(fabric):
    fab = fabric(goalstate_body="unknown_elements")
    status, _h, data = goal_state(fab)
    assert status == 200
    ids, root = parse_gs(data)
    assert ids == fab.goal_state_ids()
    assert [c.tag for c in root][0] != "Version"      # reordered
    assert b"FutureField" in data and b"CDATA" in data


# ------------------------------------------------------------------ IMDS

def test_imds_instance_document(fabric):
    fab = fabric()
    status, headers, data = imds(fab, "/metadata/instance?api-version=2021-02-01")
    assert status == 200 and headers["content-type"].startswith("application/json")
    doc = json.loads(data)
    c = doc["compute"]
    assert c["osProfile"]["computerName"] == "myvm"
    assert c["name"] == "myvmss_3" and c["name"] != c["osProfile"]["computerName"]
    assert c["vmId"] == "5c9f1c56-64f7-4d55-9a0b-6c2f0e8b7a31"
    assert c["osProfile"]["disablePasswordAuthentication"] == "true"
    for key in ("azEnvironment", "location", "osType", "vmScaleSetName", "vmSize", "publicKeys",
                "subscriptionId", "resourceGroupName", "userData"):
        assert key in c
    nic = doc["network"]["interface"][0]
    assert nic["macAddress"] == "525400123456"
    assert nic["ipv4"]["ipAddress"][0]["privateIpAddress"] == "10.0.0.4"
    assert "publicIpAddress" in nic["ipv4"]["ipAddress"][0]
    assert nic["ipv4"]["subnet"][0] == {"address": "10.0.0.0", "prefix": "24"}

    def strings_only(node):
        if isinstance(node, dict):
            return all(strings_only(v) for v in node.values())
        if isinstance(node, list):
            return all(strings_only(v) for v in node)
        return isinstance(node, str)
    assert strings_only(doc)
    assert "extended" not in doc
    ext = json.loads(imds(fab, "/metadata/instance?api-version=2023-11-15&extended=true")[2])
    assert ext["extended"]["compute"]["ppsType"] == "None"


def test_imds_identity_from_scenario_and_override(fabric):
    fab = fabric(computer_name="web-01", name="web_01", vm_id="0a1b2c3d-0000-4000-8000-000000000001",
                 mac="000D3A1B2C3D", imds_override={"compute": {"zone": "2"}})
    doc = json.loads(imds(fab, "/metadata/instance?api-version=2021-02-01")[2])
    assert doc["compute"]["osProfile"]["computerName"] == "web-01"
    assert doc["compute"]["vmId"] == "0a1b2c3d-0000-4000-8000-000000000001"
    assert doc["compute"]["zone"] == "2"
    assert doc["network"]["interface"][0]["macAddress"] == "000D3A1B2C3D"
    assert fab.goal_state_ids()["instance_id"].endswith("._web-01")


def test_imds_leaf_paths_and_text_format(fabric):
    fab = fabric()
    q = "?api-version=2019-06-01&format=text"
    status, headers, data = imds(fab, "/metadata/instance/compute/name" + q)
    assert (status, data) == (200, b"myvmss_3") and headers["content-type"].startswith("text/plain")
    q = "?api-version=2021-02-01&format=text"
    assert imds(fab, "/metadata/instance/compute/osProfile/computerName" + q)[2] == b"myvm"
    assert imds(fab, "/metadata/instance/network/interface/0/macAddress" + q)[2] == b"525400123456"
    assert imds(fab, "/metadata/instance/network/interface/0/ipv4/ipAddress/0/privateIpAddress" + q)[2] \
        == b"10.0.0.4"
    listing = imds(fab, "/metadata/instance/compute" + q)[2].decode().split("\n")
    assert "osProfile/" in listing and "vmId" in listing
    compute = json.loads(imds(fab, "/metadata/instance/compute?api-version=2021-02-01")[2])
    assert compute["vmId"] == fab.instance_document()["compute"]["vmId"]
    status, _h, data = imds(fab, "/metadata/instance/compute/vmId?api-version=2021-02-01")
    assert status == 400 and "format" in json.loads(data)["error"]
    assert imds(fab, "/metadata/instance/compute/nosuch" + q)[0] == 404
    assert imds(fab, "/metadata/instance/network/interface/7" + q)[0] == 404


def test_imds_old_api_version_has_no_os_profile(fabric):
    fab = fabric()
    doc = json.loads(imds(fab, "/metadata/instance?api-version=2019-06-01")[2])
    assert "osProfile" not in doc["compute"] and doc["compute"]["name"] == "myvmss_3"
    doc = json.loads(imds(fab, "/metadata/instance?api-version=2020-09-01")[2])
    assert doc["compute"]["osProfile"]["computerName"] == "myvm"
    assert "disablePasswordAuthentication" not in doc["compute"]["osProfile"]


def test_imds_versions(fabric):
    fab = fabric()
    status, _h, data = imds(fab, "/metadata/versions")
    assert status == 200
    versions = json.loads(data)["apiVersions"]
    assert "2021-02-01" in versions and "2019-06-01" in versions


def test_imds_requires_metadata_header(fabric):
    fab = fabric()
    status, headers, data = imds(fab, "/metadata/instance?api-version=2021-02-01", metadata=False)
    assert status == 400 and headers["content-type"].startswith("application/json")
    assert json.loads(data) == {"error": "Bad request. Required metadata header not specified"}
    assert imds(fab, "/metadata/instance?api-version=2021-02-01", metadata=False,
                headers={"Metadata": "false"})[0] == 400
    assert imds(fab, "/metadata/instance?api-version=2021-02-01", metadata=False,
                headers={"Metadata": "True"})[0] == 200


def test_imds_rejects_x_forwarded_for(fabric):
    fab = fabric()
    status, _h, data = imds(fab, "/metadata/instance?api-version=2021-02-01",
                            headers={"X-Forwarded-For": "10.0.0.9"})
    assert status == 400 and "X-Forwarded-For" in json.loads(data)["error"]


@pytest.mark.parametrize("query", ["", "?api-version=", "?api-version=2099-01-01", "?api-version=latest"])
def test_imds_api_version_errors(fabric, query):
    fab = fabric()
    status, _h, data = imds(fab, "/metadata/instance" + query)
    assert status == 400
    doc = json.loads(data)
    assert doc["error"].startswith("Bad request. api-version")
    assert doc["newest-versions"][0] == "2025-04-07" and len(doc["newest-versions"]) == 3


def test_imds_duplicate_query_and_unknown_path(fabric):
    fab = fabric()
    assert imds(fab, "/metadata/instance?api-version=2021-02-01&api-version=2021-02-01")[0] == 400
    assert imds(fab, "/metadata/nosuch?api-version=2021-02-01")[0] == 404


def test_imds_gone_for(fabric):
    fab = fabric(imds_gone_for=0.5)
    path = "/metadata/instance?api-version=2021-02-01"
    status, _h, data = imds(fab, path)
    assert status == 410 and "error" in json.loads(data)
    assert fab.requests("imds")[0]["fault"] == "imds_gone"
    time.sleep(max(0, 0.55 - fab.now()))
    assert imds(fab, path)[0] == 200


def test_imds_gone_from_first_request(fabric):
    fab = fabric(imds_gone_for=0.3, imds_gone_from="first_request")
    time.sleep(0.35)                      # since start: would be over already
    path = "/metadata/instance?api-version=2021-02-01"
    assert imds(fab, path)[0] == 410
    first = fab.requests("imds")[0]["t"]
    time.sleep(max(0, first + 0.35 - fab.now()))
    assert imds(fab, path)[0] == 200


def test_imds_body_fault_waits_for_a_json_instance_request(fabric):
    fab = fabric(imds_body="malformed", imds_body_count=1)
    q = "?api-version=2021-02-01"
    assert imds(fab, "/metadata/instance/compute/osProfile/computerName" + q + "&format=text")[2] == b"myvm"
    assert imds(fab, "/metadata/versions")[0] == 200
    with pytest.raises(ValueError):
        json.loads(imds(fab, "/metadata/instance" + q)[2])
    assert json.loads(imds(fab, "/metadata/instance" + q)[2])["compute"]["vmId"]


def test_imds_statuses_delay_drop(fabric):
    fab = fabric(imds_statuses=[[429, {"Retry-After": "2"}], 500, 404], imds_drop=1, imds_delay=0.2)
    path = "/metadata/instance?api-version=2021-02-01"
    start = time.monotonic()
    with pytest.raises(http.client.RemoteDisconnected):
        imds(fab, path)
    assert time.monotonic() - start >= 0.2
    got = [imds(fab, path) for _ in range(4)]
    assert [g[0] for g in got] == [429, 500, 404, 200]
    assert got[0][1]["retry-after"] == "2"
    recs = fab.requests("imds")
    assert recs[0]["status"] is None and recs[0]["fault"] == "delay,drop"
    assert recs[1]["fault"] == "delay,status_sequence"


def test_imds_rate_limit(fabric):
    fab = fabric(imds_rate_limit=5)
    statuses = [imds(fab, "/metadata/versions")[0] for _ in range(7)]
    assert statuses[:5] == [200] * 5 and 429 in statuses[5:]


@pytest.mark.parametrize("fault", ["no_osprofile", "empty_computer_name", "malformed"])
def test_imds_body_faults(fabric, fault):
    fab = fabric(imds_body=fault, imds_body_count=1)
    path = "/metadata/instance?api-version=2021-02-01"
    status, _h, data = imds(fab, path)
    assert status == 200
    if fault == "malformed":
        with pytest.raises(ValueError):
            json.loads(data)
    elif fault == "no_osprofile":
        assert "osProfile" not in json.loads(data)["compute"]
    else:
        assert json.loads(data)["compute"]["osProfile"]["computerName"] == ""
    assert fab.requests()[0]["fault"] == "imds_body:" + fault
    assert json.loads(imds(fab, path)[2])["compute"]["osProfile"]["computerName"] == "myvm"


def test_imds_body_oversized(fabric):
    fab = fabric(imds_body="oversized", oversized_bytes=2 * 1024 * 1024 + 10)
    status, headers, data = imds(fab, "/metadata/instance?api-version=2021-02-01")
    assert status == 200 and "content-length" not in headers
    assert len(data) > 2 * 1024 * 1024
    assert json.loads(data)["compute"]["osProfile"]["computerName"] == "myvm"


# ------------------------------------------------------------------ records, API

def test_records_are_complete(fabric):
    fab = fabric()
    ids = fab.goal_state_ids()
    goal_state(fab)
    post_health(fab, health_xml(ids))
    imds(fab, "/metadata/instance?api-version=2021-02-01", headers={"X-Test": "Yes"})
    recs = fab.requests()
    assert [r["service"] for r in recs] == ["wireserver", "wireserver", "imds"]
    keys = {"service", "method", "path", "headers", "body", "status", "t", "fault"}
    assert all(set(r) == keys for r in recs)
    gs, health, md = recs
    assert gs["method"] == "GET" and gs["path"] == "/machine/?comp=goalstate" and gs["status"] == 200
    assert gs["headers"]["x-ms-version"] == "2012-11-30"
    assert gs["headers"]["x-ms-agent-name"] == "emulator-test/1"
    assert health["method"] == "POST" and health["body"] == health_xml(ids).decode()
    assert health["headers"]["content-type"] == "text/xml;charset=utf-8"
    assert md["headers"]["metadata"] == "true" and md["headers"]["x-test"] == "Yes"
    assert md["path"] == "/metadata/instance?api-version=2021-02-01"
    assert 0 <= gs["t"] <= health["t"] <= md["t"]
    assert fab.requests("imds") == [md]
    # returned copies cannot change the emulator's state
    recs[0]["status"] = 999
    assert fab.requests()[0]["status"] == 200


def test_configure_validates(fabric):
    fab = fabric()
    with pytest.raises(ValueError, match="unknown scenario key"):
        fab.configure(ws_dorp=1)
    with pytest.raises(ValueError):
        fab.configure(goalstate_statuses=[99])
    with pytest.raises(ValueError):
        fab.configure(goalstate_body="weird")
    with pytest.raises(ValueError):
        Fabric({"incarnation": "1"})
    fab.configure(incarnation=7, computer_name="other")
    assert fab.goal_state_ids()["incarnation"] == 7
    assert fab.goal_state_ids()["instance_id"].endswith("._other")


def test_context_manager_and_stop_closes_ports():
    with Fabric().start() as fab:
        address = fab.wireserver_address
        assert goal_state(fab)[0] == 200
    host, port = address.rsplit(":", 1)
    with pytest.raises(OSError) as exc:
        socket.create_connection((host, int(port)), timeout=1).close()
    assert exc.value.errno in (errno.ECONNREFUSED, None) or isinstance(exc.value, ConnectionRefusedError)


def test_two_emulators_in_parallel_on_ephemeral_ports(fabric):
    a, b = fabric(computer_name="a"), fabric(computer_name="b")
    assert len({a.wireserver_address, a.imds_address, b.wireserver_address, b.imds_address}) == 4
    assert parse_gs(goal_state(a)[2])[0]["instance_id"].endswith("._a")
    assert parse_gs(goal_state(b)[2])[0]["instance_id"].endswith("._b")
    assert len(a.requests()) == len(b.requests()) == 1


# ------------------------------------------------------------------ CLI

def _wait_file(path, proc, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and os.path.getsize(path):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no ready file")


def test_cli_ready_record_control_and_sigterm(tmp_path):
    ready, record = str(tmp_path / "ready.json"), str(tmp_path / "rec.jsonl")
    scenario = tmp_path / "s.json"
    scenario.write_text(json.dumps({"computer_name": "clivm", "goalstate_statuses": [503]}))
    proc = subprocess.Popen(
        [sys.executable, EMULATOR, "--ready-file", ready, "--record", record,
         "--control", "127.0.0.1:0", "--scenario", "@" + str(scenario)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_file(ready, proc)
        with open(ready) as f:
            info = json.loads(f.read())
        assert set(info) >= {"wireserver", "imds", "control", "pid"}
        assert info["pid"] == proc.pid
        assert call(info["wireserver"], "GET", "/machine/?comp=goalstate", headers=WS_HEADERS)[0] == 503
        status, _h, data = call(info["wireserver"], "GET", "/machine/?comp=goalstate", headers=WS_HEADERS)
        assert status == 200 and b"._clivm</InstanceId>" in data
        ctl = "http://" + info["control"]
        ids = json.loads(urllib.request.urlopen(ctl + "/goal-state-ids", timeout=5).read())
        assert ids["instance_id"].endswith("._clivm")
        req = urllib.request.Request(ctl + "/configure", data=json.dumps({"incarnation": 5}).encode(),
                                     method="POST")
        assert json.loads(urllib.request.urlopen(req, timeout=5).read())["goal_state_ids"]["incarnation"] == 5
        bad = urllib.request.Request(ctl + "/configure", data=b'{"nope": 1}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(bad, timeout=5)
        assert exc.value.code == 400
        body = health_xml(dict(ids, incarnation=5))
        assert call(info["wireserver"], "POST", "/machine?comp=health", body, WS_HEADERS)[0] == 200
        reports = json.loads(urllib.request.urlopen(ctl + "/health-reports", timeout=5).read())
        assert [r["incarnation"] for r in reports] == [5]
        recs = json.loads(urllib.request.urlopen(ctl + "/requests?service=wireserver", timeout=5).read())
        assert [r["status"] for r in recs] == [503, 200, 200]
        with open(record) as f:
            lines = [json.loads(line) for line in f]
        assert [r["status"] for r in lines] == [503, 200, 200]
        assert lines[0]["fault"] == "status_sequence"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err


def test_cli_refuse_for_port_known_in_advance(tmp_path):
    ready = str(tmp_path / "ready.json")
    proc = subprocess.Popen([sys.executable, EMULATOR, "--ready-file", ready,
                             "--scenario", '{"ws_refuse_for": 30}'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_file(ready, proc)
        with open(ready) as f:
            info = json.loads(f.read())
        host, port = info["wireserver"].rsplit(":", 1)
        assert int(port) > 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()
        assert call(info["imds"], "GET", "/metadata/versions", headers={"Metadata": "true"})[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    assert proc.returncode == 0


def test_cli_help_and_bad_input():
    out = subprocess.run([sys.executable, EMULATOR, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0
    for key, _d, _k, _h in fabric_emulator.SCENARIO_KEYS:
        assert key in out.stdout
    bad = subprocess.run([sys.executable, EMULATOR, "--scenario", '{"nope": 1}'],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "unknown scenario key" in bad.stderr
    bad = subprocess.run([sys.executable, EMULATOR, "--scenario", "{not json"],
                         capture_output=True, text=True, timeout=10)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
