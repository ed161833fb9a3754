"""The image-building examples (examples/), checked as far as this machine can
without Azure or Packer: the shell parses (POSIX sh for generalize.sh, which Packer
runs with sh), it calls only what our CLI has, and the Packer template is
consistent with the script it runs. tests/pkg/test_examples_chroot.py runs
generalize.sh for real in a Debian 12 chroot with waagent installed."""

import os
import re
import shutil
import subprocess

import pytest

from azure_firstboot import cli

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EX = os.path.join(TOP, "examples")
GENERALIZE = os.path.join(EX, "generalize.sh")
PACKER = os.path.join(EX, "packer", "azure-firstboot.pkr.hcl")
AZ = os.path.join(EX, "az-cli", "build-image.sh")


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def code(text):
    """Shell text without comment lines (and trailing comments after '  #')."""
    return "\n".join(re.sub(r"\s+#\s.*$", "", l) for l in text.splitlines() if not l.lstrip().startswith("#"))


@pytest.mark.parametrize("shell, path", [
    ("sh", GENERALIZE), ("dash", GENERALIZE), ("bash", GENERALIZE), ("bash", AZ)])
def test_scripts_parse(shell, path):
    if not shutil.which(shell):
        pytest.skip("%s not installed" % shell)
    out = subprocess.run([shell, "-n", path], stderr=subprocess.PIPE, universal_newlines=True)
    assert out.returncode == 0, out.stderr


def test_generalize_calls_our_cli_with_flags_it_has():
    calls = re.findall(r"^[ \t]*azure-firstboot[ \t]+([^|;&\n]*)", code(read(GENERALIZE)), re.M)
    assert [c.strip() for c in calls] == ["deprovision --user --yes", "check"]
    for call in calls:
        command, *flags = call.split()
        assert command in cli.COMMANDS
        assert set(flags) <= set(cli.COMMAND_FLAGS[command])


def test_no_waagent_deprovision_anywhere():
    for path in (GENERALIZE, PACKER, AZ):
        body = code(read(path))
        assert "waagent -" not in body and "waagent -force" not in body, path


def test_generalize_is_strict_and_needs_root():
    text = read(GENERALIZE)
    assert "set -eu" in text and 'id -u' in text
    # Packer runs it with sh: no bash-only syntax
    body = code(text).replace("[[:", "")   # POSIX bracket expressions ([[:space:]]) are fine
    for bashism in ("[[", "function ", "pipefail", "${!", "<<<", "$'"):
        assert bashism not in body, bashism


def test_packer_template_runs_the_script_with_what_it_needs():
    hcl = read(PACKER)
    assert re.search(r'^source "azure-arm" "(\w+)"', hcl, re.M)
    name = re.search(r'^source "azure-arm" "(\w+)"', hcl, re.M).group(1)
    assert 'sources = ["source.azure-arm.%s"]' % name in hcl
    # braces balance (outside strings)
    stripped = re.sub(r'"(?:[^"\\]|\\.)*"', '""', code(hcl))
    assert stripped.count("{") == stripped.count("}")
    # the script path resolves from the template's directory (Packer's path.root)
    script = re.search(r'script\s*=\s*"\$\{path\.root\}/([^"]+)"', hcl).group(1)
    assert os.path.isfile(os.path.normpath(os.path.join(os.path.dirname(PACKER), script)))
    # every variable used is declared
    used = set(re.findall(r"\bvar\.(\w+)", hcl))
    declared = set(re.findall(r'^variable "(\w+)"', hcl, re.M))
    assert used and used <= declared, used - declared
    # the script's required inputs are passed
    env = re.search(r"environment_vars\s*=\s*\[(.*?)\]", hcl, re.S).group(1)
    assert '"PACKAGE=' in env and "${PACKAGE" in read(GENERALIZE)
    # the build user is found as the account that ran sudo
    assert "sudo -E sh" in hcl and "SUDO_USER" in read(GENERALIZE)
    # the file provisioner puts the package where PACKAGE points
    assert 'destination = "/tmp/${basename(var.package)}"' in hcl
    assert '"PACKAGE=/tmp/${basename(var.package)}"' in env
    # the build user is gone afterwards: Packer must not try to clean up over SSH
    assert re.search(r"skip_clean\s*=\s*true", hcl)
    assert "sudo -E sh" in hcl


def test_packer_default_package_is_what_make_deb_builds():
    version = re.search(r"^version\s*=\s*(\S+)", read(os.path.join(TOP, "setup.cfg")), re.M).group(1)
    assert 'default     = "dist/azure-firstboot_%s_all.deb"' % version in read(PACKER)


def test_az_example_creates_vms_without_the_agent():
    body = code(read(AZ)).replace("\\\n", " ")
    creates = re.findall(r"az vm create([^\n]*)", body)
    assert len(creates) == 2
    assert "--enable-agent false" in creates[-1]
    # Trusted Launch build VM -> a gallery definition that supports it (no managed image)
    assert "--security-type TrustedLaunch" in creates[0] and "--boot-diagnostics-storage" in creates[0]
    for step in ("az vm deallocate", "az vm generalize", "az sig image-definition create",
                 "az sig image-version create"):
        assert step in body
    assert "--features SecurityType=TrustedLaunchSupported" in body
    assert "generalize.sh" in body


def test_docs_show_the_same_deprovision_command():
    """One generalization command, the same everywhere."""
    docs = [os.path.join(TOP, "README.md"), os.path.join(TOP, "docs", "image-building.md")]
    for path in docs:
        assert "azure-firstboot deprovision --user --yes" in read(path), path
    assert "azure-firstboot deprovision --user --yes" in read(GENERALIZE)


def test_generalize_installs_exactly_the_network_examples():
    """The heredocs of generalize.sh are the files of examples/network/, byte for byte,
    installed where the guide says; every example file is installed."""
    text = read(GENERALIZE)
    docs = re.findall(r"cat >(\S+) <<'AZURE'\n(.*?)^AZURE$", text, re.S | re.M)
    examples = {}
    for base, _, names in os.walk(os.path.join(EX, "network")):
        for name in names:
            examples[name] = read(os.path.join(base, name))
    assert sorted(os.path.basename(target) for target, _ in docs) == sorted(examples)
    for target, body in docs:
        assert body == examples[os.path.basename(target)], target
    guide = read(os.path.join(TOP, "docs", "image-building.md"))
    for target, _ in docs:
        assert os.path.dirname(target) + "/" in guide or target in guide, target


# ------------------------------------------------------- the template, parsed

def unquote(value):
    return value[1:-1] if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"' else value


def test_packer_template_loads_and_captures_into_a_gallery_with_trusted_launch():
    """The template as HCL (python-hcl2, a test dependency: .ci/requirements.txt):
    the Packer version it needs, the current azure plugin, a Trusted Launch build VM
    captured into a gallery image definition, every attribute one azure-arm has."""
    import hcl2

    with open(PACKER, encoding="utf-8") as handle:
        doc = hcl2.load(handle)
    packer = doc["packer"][0]
    assert unquote(packer["required_version"]) == ">= 1.14.0"
    azure = packer["required_plugins"][0]["azure"]
    assert unquote(azure["source"]) == "github.com/hashicorp/azure"
    assert unquote(azure["version"]).startswith(">= 2.")
    (kind, sources), = doc["source"][0].items()
    assert unquote(kind) == "azure-arm"
    (name, src), = sources.items()
    assert unquote(src["security_type"]) == "TrustedLaunch"
    assert src["secure_boot_enabled"] is True and src["vtpm_enabled"] is True
    dest = src["shared_image_gallery_destination"][0]
    assert {k for k in dest if not k.startswith("__")} == {
        "subscription", "resource_group", "gallery_name", "image_name", "image_version"}
    assert "managed_image_name" not in src   # a Trusted Launch VM cannot become a managed image
    # azure-arm attributes (plugin 2.x documentation), so that a typo is caught here
    known = {"use_azure_cli_auth", "subscription_id", "location", "vm_size", "os_type", "image_publisher",
             "image_offer", "image_sku", "security_type", "secure_boot_enabled", "vtpm_enabled",
             "shared_image_gallery_destination", "managed_image_resource_group_name", "managed_image_name"}
    assert {k for k in src if not k.startswith("__")} <= known
    declared = {unquote(k) for v in doc["variable"] for k in v}
    used = set(re.findall(r"var\.(\w+)", json_text(doc)))
    assert used <= declared, used - declared
    build = doc["build"][0]
    assert [unquote(s) for s in build["sources"]] == ["source.azure-arm.%s" % unquote(name)]
    shell = [p for p in build["provisioner"] if "shell" in p or '"shell"' in p][0]
    shell = list(shell.values())[0]
    assert shell["skip_clean"] is True


def json_text(doc):
    import json

    return json.dumps(doc)


def test_packer_commands_shown_pass_only_declared_variables():
    """Every `packer build -var NAME=...` in the guide and the template's own comment
    names a variable the template declares, and sets every one without a default."""
    declared = set(re.findall(r'^variable "(\w+)"', read(PACKER), re.M))
    required = set(n for n in declared
                   if not re.search(r'variable "%s" \{[^}]*\bdefault\b' % n, read(PACKER)))
    texts = [read(os.path.join(TOP, "docs", "image-building.md")), read(PACKER)]
    builds = []
    for text in texts:
        joined = re.sub(r"\\\n#?\s*", " ", text)
        builds += re.findall(r"packer build ([^\n]*)", joined)
    assert len(builds) >= 2
    for line in builds:
        names = set(re.findall(r"-var (\w+)=", line))
        assert names <= declared, names - declared
        assert required <= names, required - names
