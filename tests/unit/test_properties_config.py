"""Property tests of the configuration reader (issue 8): whatever the file
holds, the reader answers with values plus one-line problems naming
FILE:LINE, never another exception; a ConfigError is the only exception of
the strict parse() and of load() (a named file that is missing)."""

from hypothesis import given, settings, strategies as s

from azure_firstboot import config

LOCAL = settings(derandomize=True, max_examples=100, deadline=None, database=None)

KEYS = sorted({k for keys in config.SCHEMA.values() for k in keys} | {"timout", "Endpoint", ""})
SECTIONS = sorted(config.SCHEMA) + ["nope", "DEFAULT", ""]
VALUES = s.one_of(
    s.sampled_from(["auto", "yes", "no", "5", "0", "-1", "1e3", "5m", "\u00b2", "\u0661", "1_0",
                    "http://1.2.3.4", "1.2.3.4:\u00b2", "1.2.3.4:99999", "127.0.0.1:80", "0.5", "."]),
    s.text(max_size=30))
LINE = s.one_of(
    s.builds(lambda sec: "[%s]" % sec, s.sampled_from(SECTIONS)),
    s.builds(lambda k, sep, v: "%s %s %s" % (k, sep, v), s.sampled_from(KEYS), s.sampled_from("=:"), VALUES),
    s.builds(lambda ind, text: ind + text, s.sampled_from(["", " ", "\t"]), s.text(max_size=40)),
    s.sampled_from(["# c", "; c", "", "[", "]", "=", ":", "\ufeff[imds]", "\r", "\x85", "\u2028"]),
)
DOC = s.builds(lambda lines, bom, nl: ("\ufeff" if bom else "") + nl.join(lines),
               s.lists(LINE, max_size=25), s.booleans(), s.sampled_from(["\n", "\r\n"]))


def _check(values, problems, source):
    assert set(values) == set(config.defaults())
    for problem in problems:
        assert problem.startswith(source + ":") and "\n" not in problem and "\r" not in problem
        assert problem.isprintable()
        assert "Traceback" not in problem and "invalid literal" not in problem
        assert "could not convert" not in problem


@LOCAL
@given(DOC)
def test_structured_text_never_raises(text):
    values, problems = config.parse_all(text, "f.conf")
    _check(values, problems, "f.conf")
    try:
        strict = config.parse(text, "f.conf")
    except config.ConfigError as exc:
        assert problems and str(exc) == problems[0]
    else:
        assert not problems and strict == values


@LOCAL
@given(s.text(max_size=400))
def test_any_text_never_raises(text):
    values, problems = config.parse_all(text, "f.conf")
    _check(values, problems, "f.conf")


@LOCAL
@given(s.binary(max_size=300))
def test_any_bytes_from_a_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("cfg") / "a.conf"
    path.write_bytes(data)
    values, problems = config.load(str(path))
    _check(values, problems, str(path))


@LOCAL
@given(s.sampled_from(sorted((sec, key) for sec, keys in config.SCHEMA.items() for key in keys)),
       VALUES)
def test_a_bad_value_keeps_the_default_and_the_other_lines(item, value):
    section, key = item
    text = "[wireserver]\nendpoint = 127.0.0.9:8080\n[%s]\n%s = %s\n" % (section, key, value)
    if item == ("wireserver", "endpoint"):
        text = "[%s]\n%s = %s\n[imds]\nendpoint = 127.0.0.9:8080\n" % (section, key, value)
    values, problems = config.parse_all(text, "f.conf")
    if problems:
        assert len(problems) == 1 and problems[0].startswith("f.conf:")
        assert values[item] == config.defaults()[item]
    kept = ("imds", "endpoint") if item == ("wireserver", "endpoint") else ("wireserver", "endpoint")
    assert values[kept] == "127.0.0.9:8080"


REGRESSIONS = [
    # (text, fragment of the problem, or None: accepted)
    ("\ufeff[provisioning]\ndeadline = 5\n", None),
    ("[imds]\ntimeout: 5\n", None),
    ("[IMDS]\nTimeout : 5\n", None),
    ("[imds]\nendpoint: 127.0.0.1:8080\n", None),
    ("[imds]\nendpoint = 1.2.3.4:\u00b2\n", "port must be a number from 1 to 65535"),
    ("[imds]\nendpoint = http://1.2.3.4\n", "without a scheme"),
    ("[imds]\ntimeout = 5m\n", "expected a number of seconds"),
    ("[imds]\ntimeout = 0\n", "must be more than 0 and at most 604800 seconds"),
    ("[imds]\ntimeout = \u0661\u0662\n", "expected a number of seconds"),
    ("[imds]\ntimeout = 1_0\n", "expected a number of seconds"),
    ("[imds]\ntimeout = 60 # a minute\n", "expected a number of seconds"),
    ("[imds]\ntimeout = 1\n  0\n", "indented line continues the value of imds.timeout"),
    ("[provisioning]\nnetwork_timeout = 0.5\n", None),
    ("[imds]\ntimeout = 5\x85x\n", "expected a number of seconds"),
]


def test_regressions():
    for text, fragment in REGRESSIONS:
        values, problems = config.parse_all(text, "f.conf")
        if fragment is None:
            assert problems == [], (text, problems)
        else:
            assert len(problems) == 1 and fragment in problems[0], (text, problems)
            assert problems[0].startswith("f.conf:2: ") or problems[0].startswith("f.conf:3: ")
