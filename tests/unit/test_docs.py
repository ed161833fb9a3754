"""The documentation stays true where a machine can tell: every `make TARGET`
shown exists in the Makefile, every `azure-firstboot COMMAND --flag` shown exists in
the CLI, every configuration key shown exists in config.SCHEMA, every relative link
(and #anchor) between the documents resolves, and the man page says which unit
carries which condition."""

import glob
import os
import re
import shlex
import subprocess
import sys

import pytest

from azure_firstboot import cli, config

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCS = [os.path.join(TOP, "README.md")] + sorted(glob.glob(os.path.join(TOP, "docs", "*.md")))
SCRIPTS = sorted(glob.glob(os.path.join(TOP, "examples", "**", "*.sh"), recursive=True))
GLOBAL_OPTIONS = {"--config", "--root", "--help", "-h", "--version"}
OPTIONS = getattr(cli, "COMMAND_OPTIONS", {})  # options that take a value (status --timeout S)
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.S | re.M)


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def rel(path):
    return os.path.relpath(path, TOP)


def code_of(text):
    """(fenced blocks [(lang, body)], inline code spans) of a Markdown text."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    spans = re.findall(r"`([^`\n]+)`", prose)
    return blocks, spans


def shell_lines(path):
    """Command lines of a document or script, with continuation lines joined."""
    text = read(path)
    if path.endswith(".sh"):
        chunks = [text]
    else:
        blocks, spans = code_of(text)
        chunks = [body for lang, body in blocks if lang in ("", "sh", "bash", "console", "shell")] + spans
    lines = []
    for chunk in chunks:
        lines += chunk.replace("\\\n", " ").splitlines()
    return [l.split(" #", 1)[0] for l in lines if not l.lstrip().startswith("#")]


def makefile_targets():
    targets = set()
    for line in read(os.path.join(TOP, "Makefile")).splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if m:
            targets.update(m.group(1).split())
    return targets


def test_collects_what_it_checks():
    assert len(DOCS) >= 8 and SCRIPTS
    assert "check" in makefile_targets() and "demo" in makefile_targets()


# ------------------------------------------------------------------ make targets

def words(line):
    try:
        return shlex.split(line)
    except ValueError:
        return line.split()


def shown_make_targets():
    for path in DOCS:
        for line in shell_lines(path):
            tokens = words(line)
            for i, token in enumerate(tokens):
                if token.strip("`(") != "make":
                    continue
                for word in tokens[i + 1:]:
                    word = word.strip("`)")
                    if not re.match(r"^[A-Za-z][\w.-]*(=.*)?$", word):
                        break
                    if "=" not in word:
                        yield rel(path), word


def test_make_targets_shown_exist():
    shown = list(shown_make_targets())
    assert ("README.md", "demo") in shown and ("README.md", "check") in shown
    targets = makefile_targets()
    missing = sorted(set((p, t) for p, t in shown if t not in targets))
    assert missing == [], "make targets shown in the docs but not in the Makefile: %s" % missing


# --------------------------------------------------------------- CLI and flags

def shown_invocations():
    """(file, command, [flags]) for each `azure-firstboot ...` shown."""
    for path in DOCS + SCRIPTS:
        for line in shell_lines(path):
            for m in re.finditer(r"(?:^|[\s;&|(`$'\"])azure-firstboot((?:\s+[^\s;&|)`'\"]+)*)", line):
                words = [w.strip("[]") for w in m.group(1).split()]
                words = [p for w in words for p in w.split("|") if p]
                command, flags, skip = None, [], False
                for word in words:
                    if skip:
                        skip = False
                        continue
                    if word in ("--config", "--root") or word in OPTIONS.get(command, ()):
                        if word not in ("--config", "--root"):
                            flags.append(word.split("=", 1)[0])
                        skip = "=" not in word
                        continue
                    if word.startswith("-"):
                        flags.append(word.split("=", 1)[0])
                    elif command is None and re.match(r"^[a-z][a-z-]*$", word):
                        command = word
                    else:
                        break
                yield rel(path), command, flags


def test_cli_commands_and_flags_shown_exist():
    shown = list(shown_invocations())
    assert any(c == "deprovision" for _, c, _ in shown)
    bad = []
    for path, command, flags in shown:
        if command is not None and command not in cli.COMMANDS:
            bad.append((path, command, "no such command"))
            continue
        allowed = GLOBAL_OPTIONS | set(cli.COMMAND_FLAGS.get(command, ())) | set(OPTIONS.get(command, ()))
        bad += [(path, command, flag) for flag in flags if flag not in allowed]
    assert bad == [], "azure-firstboot commands/flags shown in the docs that the CLI lacks: %s" % bad


def test_every_command_and_flag_is_documented():
    """The other direction: what the CLI offers, configuration.md or the image guide shows."""
    text = read(os.path.join(TOP, "docs", "configuration.md")) + read(os.path.join(TOP, "docs", "image-building.md"))
    for command in cli.COMMANDS:
        assert "`%s" % command in text, command
    for table in (cli.COMMAND_FLAGS, OPTIONS):
        for command, flags in table.items():
            for flag in flags:
                assert flag in text, (command, flag)


def test_help_runs_and_names_every_command():
    env = dict(os.environ, PYTHONPATH=os.path.join(TOP, "src"))
    out = subprocess.run([sys.executable, "-m", "azure_firstboot", "--help"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env, universal_newlines=True)
    assert out.returncode == 0
    for command in cli.COMMANDS:
        assert command in out.stdout


# --------------------------------------------------------- configuration keys

def shown_config_keys():
    for path in DOCS:
        text = read(path)
        blocks, spans = code_of(text)
        for span in spans:
            for m in re.finditer(r"\[([a-z_]+)\]\s+([a-z_]+)", span):
                yield rel(path), m.group(1), m.group(2)
        # a `[section] key` in a table cell or prose is caught by the spans above;
        # INI blocks: lower-case sections are ours (systemd's are capitalised)
        for lang, body in blocks:
            if lang not in ("ini", ""):
                continue
            section = None
            for line in body.splitlines():
                line = line.strip()
                m = re.match(r"^\[([^\]]+)\]$", line)
                if m:
                    section = m.group(1) if m.group(1).islower() else None
                elif section and re.match(r"^#?\s*[a-z_]+\s*=", line):
                    yield rel(path), section, line.lstrip("#").split("=")[0].strip()


def test_config_keys_shown_exist():
    shown = list(shown_config_keys())
    assert ("docs/configuration.md", "provisioning", "deadline") in shown
    bad = sorted(set((p, s, k) for p, s, k in shown if k not in config.SCHEMA.get(s, {})))
    assert bad == [], "configuration keys shown in the docs that config.SCHEMA lacks: %s" % bad


def test_configuration_md_lists_every_key():
    text = read(os.path.join(TOP, "docs", "configuration.md"))
    for section, keys in config.SCHEMA.items():
        for key in keys:
            assert "`[%s] %s`" % (section, key) in text, (section, key)


# ----------------------------------------------------------------------- links

def slug(heading):
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(path):
    return set(slug(h) for h in re.findall(r"^#+\s+(.*)$", FENCE.sub("", read(path)), re.M))


def links():
    for path in DOCS:
        prose = FENCE.sub("", read(path))
        prose = re.sub(r"`[^`\n]*`", "", prose)
        for target in re.findall(r"\]\(([^)\s]+)\)", prose):
            if re.match(r"^[a-z]+:", target):
                continue
            yield path, target


def test_relative_links_resolve():
    found = list(links())
    assert len(found) > 10
    bad = []
    for path, target in found:
        file_part, _, anchor = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) if file_part else path
        if not os.path.exists(dest):
            bad.append((rel(path), target, "no such file"))
        elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
            bad.append((rel(path), target, "no such heading"))
    assert bad == [], bad


def test_every_doc_is_reachable_from_the_readme():
    readme = read(os.path.join(TOP, "README.md"))
    for path in DOCS[1:]:
        assert "docs/" + os.path.basename(path) in readme, rel(path)


def test_readme_is_short():
    assert len(read(os.path.join(TOP, "README.md")).splitlines()) < 150


# -------------------------------------------------------------------- man page

def unit_conditions():
    for path in sorted(glob.glob(os.path.join(TOP, "systemd", "*.service"))):
        conds = re.findall(r"^(Condition\w+)=(.+)$", read(path), re.M)
        yield os.path.basename(path), conds


def man_unit_paragraphs():
    man = read(os.path.join(TOP, "systemd", "azure-firstboot.8"))
    units = man[man.index(".SH UNITS"):]
    units = units[:units.index("\n.SH ", 1)]
    paragraphs = {}
    for part in re.split(r"\n\.TP\n", units):
        m = re.match(r"\.B (azure\\-firstboot\\-[\w\\-]+\.service)", part)
        if m:
            paragraphs[m.group(1).replace("\\-", "-")] = part.replace("\\-", "-").replace("\\(", "(")
    return paragraphs


def test_man_page_says_which_unit_carries_which_condition():
    paragraphs = man_unit_paragraphs()
    for unit, conds in unit_conditions():
        assert unit in paragraphs, "man page UNITS has no paragraph for %s" % unit
        flat = re.sub(r"\s+", " ", re.sub(r"^\.\w+ ?", "", paragraphs[unit], flags=re.M))
        for name, value in conds:
            assert value in flat, "%s: %s=%s not in its man page paragraph" % (unit, name, value)


@pytest.mark.parametrize("section", [".SH EXAMPLES", ".BR journalctl (1)"])
def test_man_page_has(section):
    assert section in read(os.path.join(TOP, "systemd", "azure-firstboot.8"))


# ------------------------------------------------------------------ az CLI

# Every `az` command the guide, the troubleshooting page and the examples show, with
# the flags it takes (from `az ... --help` of azure-cli 2.6x; only the flags we use, so a
# typo or a flag from another command is caught). Add a command here when a document
# shows a new one, after checking it against `az ... --help`.
AZ_FLAGS = {
    "account show": {"--query", "--output", "-o"},
    "group create": {"--name", "--location", "--output"},
    "vm create": {"--resource-group", "--name", "--image", "--size", "--admin-username",
                  "--ssh-key-values", "--public-ip-sku", "--output", "--enable-agent",
                  "--security-type", "--enable-secure-boot", "--enable-vtpm",
                  "--boot-diagnostics-storage", "--computer-name", "--admin-password",
                  "--authentication-type", "--custom-data", "--user-data"},
    "vm show": {"--show-details", "--resource-group", "-g", "--name", "-n", "--query", "--output",
                "-o"},
    "vm deallocate": {"--resource-group", "--name"},
    "vm generalize": {"--resource-group", "--name"},
    "vm delete": {"--resource-group", "--name", "--yes"},
    "vm get-instance-view": {"--resource-group", "--name", "--query", "--output"},
    "vm boot-diagnostics get-boot-log": {"--resource-group", "--name"},
    "vm boot-diagnostics enable": {"--resource-group", "--name", "--storage"},
    "image create": {"--resource-group", "--name", "--source", "--hyper-v-generation", "--output"},
    "sig create": {"--resource-group", "--gallery-name", "--output"},
    "sig image-definition create": {"--resource-group", "--gallery-name", "--gallery-image-definition",
                                    "--publisher", "--offer", "--sku", "--os-type", "--os-state",
                                    "--hyper-v-generation", "--features", "--output"},
    "sig image-definition show": {"--resource-group", "--gallery-name", "--gallery-image-definition",
                                  "--query", "--output"},
    "sig image-version create": {"--resource-group", "--gallery-name", "--gallery-image-definition",
                                 "--gallery-image-version", "--virtual-machine", "--output"},
    "login": set(),
}


def az_calls(line):
    """(subcommand, [flags]) of each `az ...` in a shell line; $(az ...) inside
    is its own call."""
    parts = []
    while True:
        inner = re.findall(r"\$\(([^()]*)\)", line)
        if not inner:
            break
        parts += inner
        line = re.sub(r"\$\([^()]*\)", "X", line)
    parts.append(line)
    for part in parts:
        for m in re.finditer(r"(?:^|[\s;&|(`])az\s+([^;&|`]*)", part):
            words = m.group(1).split()
            sub = []
            while words and re.match(r"^[a-z][a-z0-9-]*$", words[0]):
                sub.append(words.pop(0))
            flags = [w.split("=", 1)[0] for w in words if w.startswith("-") and not w.startswith("-->")]
            yield " ".join(sub), flags


def shown_az():
    for path in DOCS + SCRIPTS:
        for line in shell_lines(path):
            for sub, flags in az_calls(line):
                yield rel(path), sub, flags


def test_az_commands_and_flags_shown_exist():
    shown = list(shown_az())
    subs = set(s for _, s, _ in shown)
    for needed in ("sig image-version create", "vm boot-diagnostics get-boot-log", "vm get-instance-view"):
        assert needed in subs, needed
    bad = []
    for path, sub, flags in shown:
        if sub not in AZ_FLAGS:
            bad.append((path, sub, "command not in AZ_FLAGS"))
            continue
        bad += [(path, sub, flag) for flag in flags if flag not in AZ_FLAGS[sub]]
    assert bad == [], bad


def test_images_are_captured_where_trusted_launch_allows():
    """A gallery definition that supports Trusted Launch; a managed image only from a
    standard build VM."""
    guide = read(os.path.join(TOP, "docs", "image-building.md"))
    assert "--features SecurityType=TrustedLaunchSupported" in guide
    assert "--security-type Standard" in guide
    script = read(os.path.join(TOP, "examples", "az-cli", "build-image.sh"))
    assert "--features SecurityType=TrustedLaunchSupported" in script
    assert "az image create" not in script
