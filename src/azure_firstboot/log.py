"""Plain log lines on stdout/stderr.

journald adds time and unit; when stdout is the journal (JOURNAL_STREAM is
set) warnings and errors carry a syslog priority prefix so that
``journalctl -p warning`` finds them.  Every line is flushed at once, so the
journal shows when it happened, not when the process exited.

Under systemd a unit's stderr goes to the journal *and the console*
(StandardError=journal+console): there it carries only the unit's one
summary line, so that boot diagnostics (the serial console) show each unit's
outcome; warnings and errors then go to stdout with their priority prefix.
Outside systemd, warnings and errors go to stderr as
"azure-firstboot: error: ..." and there is no summary line.

One message is one line: messages carry network data (reasons, ids, error
bodies), so every character that is not printable (CR, LF, TAB, ESC and the
other C0 controls, DEL, NEL and the other C1 controls, U+2028/U+2029, format
and unassigned characters) is written as a visible escape (``\\r``,
``\\x1b``, ``\\x85``, ``\\u2028``): nothing from the network can forge a log
line, a syslog priority or a terminal escape sequence.
"""

import os
import sys

_JOURNAL = bool(os.environ.get("JOURNAL_STREAM"))
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char):
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if code < 0x100:
        return "\\x%02x" % code
    if code < 0x10000:
        return "\\u%04x" % code
    return "\\U%08x" % code


def printable(text):
    """``text`` with every non-printable character escaped visibly; the
    result is one line that a terminal shows as it is."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _emit(stream, prefix, message):
    line = (prefix if _JOURNAL else "") + printable(message) + "\n"
    try:
        stream.write(line)
    except UnicodeEncodeError:      # e.g. an ASCII stdout under the C locale (Python 3.6)
        encoding = getattr(stream, "encoding", None) or "ascii"
        stream.write(line.encode(encoding, "backslashreplace").decode(encoding))
    stream.flush()


def info(message):
    _emit(sys.stdout, "<6>", message)


def warning(message):
    if _JOURNAL:
        _emit(sys.stdout, "<4>", "warning: " + message)
    else:
        _emit(sys.stderr, "", "azure-firstboot: warning: " + message)


def error(message):
    if _JOURNAL:
        _emit(sys.stdout, "<3>", "error: " + message)
    else:
        _emit(sys.stderr, "", "azure-firstboot: error: " + message)


def summary(message):
    """A unit's one console line (journal+console stderr); only under systemd."""
    if _JOURNAL:
        _emit(sys.stderr, "<5>", message[:300])
