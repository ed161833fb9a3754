"""sshd_config's effective order (sshd.py, pure) and what the user step does
with it: the drop-in's PasswordAuthentication / KbdInteractiveAuthentication
take effect, or the step fails with the reason when it matters."""

import os

import pytest
from hypothesis import given, strategies as s

from azure_firstboot import sshd

DROPIN = "/etc/ssh/sshd_config.d/50-azure-firstboot.conf"
KEYS = ("passwordauthentication", "kbdinteractiveauthentication")


def dropin(value):
    return "# ours\nPasswordAuthentication %s\nKbdInteractiveAuthentication %s\n" % (value, value)


def tree(main, extra=None, value="yes"):
    """files, listings of a tree: main sshd_config, extra {path: text}, our drop-in."""
    files = {sshd.MAIN: main, DROPIN: dropin(value)}
    files.update(extra or {})
    listings = {}
    for path in files:
        parent, name = path.rsplit("/", 1)
        listings.setdefault(parent or "/", []).append(name)
    return files, listings


def judge(main, extra=None, password_auth=True):
    files, listings = tree(main, extra, "yes" if password_auth else "no")
    result = sshd.evaluate(files, listings, KEYS)
    assert not result.needs
    return result, sshd.verdict(result, DROPIN, password_auth)


INCLUDE = "Include /etc/ssh/sshd_config.d/*.conf\n"


@pytest.mark.parametrize("main, extra, password_auth, fails, ours", [
    # Debian/Ubuntu: Include first, the distribution's settings after it
    (INCLUDE + "KbdInteractiveAuthentication no\nUsePAM yes\n", None, True, None, True),
    (INCLUDE + "PasswordAuthentication yes\n", None, False, None, True),
    # relative Include, keyword in any case, "=" form
    ("include sshd_config.d/*.conf\npasswordauthentication=no\n", None, True, None, True),
    # an earlier line wins
    ("PasswordAuthentication no\n" + INCLUDE, None, True, "takes PasswordAuthentication no from /etc/ssh/sshd_config:1", False),
    ("PasswordAuthentication yes\n" + INCLUDE, None, False, "takes PasswordAuthentication yes from /etc/ssh/sshd_config:1", False),
    ("ChallengeResponseAuthentication yes\n" + INCLUDE, None, False, "KbdInteractiveAuthentication yes from /etc/ssh/sshd_config:1", False),
    # a drop-in sorted before ours
    (INCLUDE, {"/etc/ssh/sshd_config.d/40-cloud.conf": "PasswordAuthentication no\n"}, True,
     "from /etc/ssh/sshd_config.d/40-cloud.conf:1", False),
    # ... and after ours (Ubuntu's 60-cloudimg-settings.conf)
    (INCLUDE, {"/etc/ssh/sshd_config.d/60-cloudimg-settings.conf": "PasswordAuthentication no\n"}, True, None, True),
    # hidden files are not matched by *.conf
    (INCLUDE, {"/etc/ssh/sshd_config.d/.40-x.conf": "PasswordAuthentication no\n"}, True, None, True),
    # Match blocks are not the global order; a Match in an included file ends with it
    ("Match User bob\n  PasswordAuthentication no\n", None, True, None, False),
    ("Include /etc/ssh/m.conf\n" + INCLUDE, {"/etc/ssh/m.conf": "Match Group x\nPasswordAuthentication no\n"},
     True, None, True),
    ("Match User bob\n" + INCLUDE, None, True, None, False),
    # no Include: sshd's default (yes) decides; an explicit line
    ("UsePAM yes\n", None, True, None, False),
    ("UsePAM yes\n", None, False, None, False),
    ("PasswordAuthentication no\n", None, True, "takes PasswordAuthentication no from /etc/ssh/sshd_config:1", False),
    # comments are not settings
    ("#PasswordAuthentication no\nUsePAM yes # PasswordAuthentication no\n" + INCLUDE, None, True, None, True),
])
def test_examples(main, extra, password_auth, fails, ours):
    result, (failure, decides, notes) = judge(main, extra, password_auth)
    if fails:
        assert failure and fails in failure, failure
    else:
        assert failure is None, failure
        assert decides is ours, (notes, result.values)


def test_match_block_is_reported():
    result, (failure, ours, notes) = judge(INCLUDE + "Match User bob\n  PasswordAuthentication no\n")
    assert failure is None and ours and any("a Match block sets PasswordAuthentication no" in n for n in notes)


def test_include_loop_and_limits():
    # a file that includes itself: sshd refuses past 16 levels; we cannot tell
    files, listings = tree("Include /etc/ssh/sshd_config\n")
    result = sshd.evaluate(files, listings, KEYS)
    assert result.problem and "16" in result.problem
    failure, ours, notes = sshd.verdict(result, DROPIN, True)
    assert "cannot tell" in failure
    assert sshd.verdict(result, DROPIN, False)[0] is None  # key-only: a warning, not a failure
    many = {"/etc/ssh/d/%03d.conf" % i: "# %d\n" % i for i in range(300)}
    files, listings = tree("Include /etc/ssh/d/*.conf\n", many)
    assert "more than 256 files" in sshd.evaluate(files, listings, KEYS).problem


def test_unreadable_include_means_cannot_tell():
    files, listings = tree("Include /etc/ssh/x.conf\n" + INCLUDE)
    files["/etc/ssh/x.conf"] = sshd.Unreadable("not a regular file")
    failure, _, _ = sshd.verdict(sshd.evaluate(files, listings, KEYS), DROPIN, True)
    assert "cannot read /etc/ssh/x.conf: not a regular file" in failure


def test_needs_are_asked_for_then_answered():
    result = sshd.evaluate({sshd.MAIN: "Include a/*.conf b.conf\n"}, {}, KEYS)
    assert result.needs == {("d", "/etc/ssh/a"), ("f", "/etc/ssh/b.conf")}
    result = sshd.evaluate({sshd.MAIN: "Include a/*.conf b.conf\n", "/etc/ssh/b.conf": None},
                           {"/etc/ssh/a": ["1.conf", "2.txt"]}, KEYS)
    assert result.needs == {("f", "/etc/ssh/a/1.conf")}


@pytest.mark.parametrize("pattern, name, hit", [
    ("*.conf", "50-x.conf", True), ("*.conf", "x.conf.bak", False), ("*.conf", ".x.conf", False),
    (".*", ".x", True), ("[0-4]*", "3a", True), ("[!0-4]*", "3a", False), ("[^0-4]*", "5a", True),
    ("?x", "ax", True), ("?x", "x", False), ("a[", "a[", True), ("**", "", True),
])
def test_glob_component(pattern, name, hit):
    assert sshd._match(pattern, name) is hit


@pytest.mark.parametrize("line, expected", [
    ("PasswordAuthentication yes", ["PasswordAuthentication", "yes"]),
    ("  passwordauthentication=no # c", ["passwordauthentication", "no"]),
    ("Key = v", ["Key", "v"]), ("Key =v", ["Key", "v"]), ("Key==v", ["Key", "=v"]),
    ('Include "/etc/ssh/a b/*.conf" x', ["Include", "/etc/ssh/a b/*.conf", "x"]),
    ("Include a#b #c", ["Include", "a#b"]), ("# x", []), ("", []), ("\t\f", []),
])
def test_words(line, expected):
    assert sshd.words(line) == expected


# ------------------------------------------------------------------ properties

LINES = s.sampled_from([
    "PasswordAuthentication yes", "PasswordAuthentication no", "passwordauthentication=NO",
    "KbdInteractiveAuthentication yes", "ChallengeResponseAuthentication no", "Match User x", "Match all",
    "UsePAM yes", "# PasswordAuthentication no", "", "Include /etc/ssh/a.conf", "Include b.conf",
    "Include /etc/ssh/sshd_config.d/*.conf", "Include /etc/ssh/sshd_config", "Include \"", "=", "Include",
])
NAMES = ("/etc/ssh/sshd_config", "/etc/ssh/a.conf", "/etc/ssh/b.conf", "/etc/ssh/sshd_config.d/10-a.conf",
         "/etc/ssh/sshd_config.d/90-b.conf")


def reference(files, path, depth=0, in_match=False, out=None):
    """A plain model: lines in order, includes expanded in place (the tree's
    files only), Match to the end of its file."""
    out = [] if out is None else out
    if depth > sshd.MAX_DEPTH:
        raise RecursionError
    for number, line in enumerate((files.get(path) or "").split("\n"), 1):
        w = sshd.words(line)
        if not w:
            continue
        key = sshd.ALIASES.get(w[0].lower(), w[0].lower())
        if key == "match":
            in_match = True
        elif key == "include":
            for pattern in w[1:]:
                full = pattern if pattern.startswith("/") else "/etc/ssh/" + pattern
                if full.endswith("*.conf"):
                    hits = sorted(p for p in files if p.startswith(full[:-6]) and p.endswith(".conf")
                                  and "/" not in p[len(full) - 6:] and not p[len(full) - 6:].startswith("."))
                else:
                    hits = [full] if full in files else []
                for hit in hits:
                    reference(files, hit, depth + 1, in_match, out)
        elif len(w) >= 2 and not in_match:
            out.append((key, w[1].lower(), path, number))
    return out


@given(s.dictionaries(s.sampled_from(NAMES), s.lists(LINES, max_size=6).map("\n".join), min_size=1),
       s.booleans())
def test_first_value_wins_as_in_the_plain_model(texts, password_auth):
    files = dict(texts)
    files.setdefault(sshd.MAIN, "")
    files[DROPIN] = dropin("yes" if password_auth else "no")
    listings = {}
    for path in files:
        parent, name = path.rsplit("/", 1)
        listings.setdefault(parent, []).append(name)
    for path in NAMES:
        files.setdefault(path, None)
    result = sshd.evaluate(files, listings, KEYS)
    failure, ours, notes = sshd.verdict(result, DROPIN, password_auth)  # never raises
    assert not result.needs
    try:
        model = reference(files, sshd.MAIN)
    except RecursionError:
        assert result.problem
        return
    if result.problem:
        return  # too many files (a wide fan-out): we cannot tell either
    for key in KEYS:
        first = next(((v, p, n) for k, v, p, n in model if k == key), None)
        assert result.values.get(key) == first
    if ours:
        assert result.values["passwordauthentication"][1] == DROPIN


@given(s.text(max_size=300))
def test_any_text_is_judged_without_error(text):
    files, listings = tree(text)
    result = sshd.evaluate(files, listings, KEYS)
    sshd.verdict(result, DROPIN, True)
    sshd.verdict(result, DROPIN, False)


# ------------------------------------------------------------------ the user step

e2e = pytest.mark.skipif(os.geteuid() != 0, reason="useradd --root needs root (chroot)")


@e2e
@pytest.mark.parametrize("config, extra, password, fragment", [
    ("PasswordAuthentication yes\n" + INCLUDE, {}, "true",
     "key-only logins were asked for (disablePasswordAuthentication true), but sshd takes "
     "PasswordAuthentication yes from /etc/ssh/sshd_config:1, before " + DROPIN),
    (INCLUDE, {"etc/ssh/sshd_config.d/10-image.conf": "KbdInteractiveAuthentication yes\n"}, "true",
     "KbdInteractiveAuthentication yes from /etc/ssh/sshd_config.d/10-image.conf:1"),
])
def test_user_step_fails_when_the_setting_would_not_take_effect(tmp_path, config, extra, password, fragment):
    from fabric_emulator import Fabric
    from test_user_e2e import assert_failed, user_machine

    with Fabric({"admin_username": "ivy", "disable_password_authentication": password}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.write("etc/ssh/sshd_config", config)
        for rel, text in extra.items():
            m.write(rel, text)
        assert_failed(m, fab, m.boot(), fragment, user="ivy")


@e2e
def test_drop_in_sets_both_keywords(tmp_path):
    from fabric_emulator import Fabric
    from test_agent_e2e import assert_ok
    from test_user_e2e import user_machine

    with Fabric({"admin_username": "ivy"}).start() as fab:
        m = user_machine(tmp_path, fab)
        m.write("etc/ssh/sshd_config.d/60-later.conf", "PasswordAuthentication yes\n")
        assert_ok(m.boot())
        text = m.read("etc/ssh/sshd_config.d/50-azure-firstboot.conf")
        assert "PasswordAuthentication no\nKbdInteractiveAuthentication no\n" in text
