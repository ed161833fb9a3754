"""Plain log lines on stdout/stderr.

journald adds time and unit; when stdout is the journal (JOURNAL_STREAM is
set) warnings and errors carry a syslog priority prefix so that
``journalctl -p warning`` finds them.  Every line is flushed at once, so the
journal shows when it happened, not when the process exited.
"""

import os
import sys

_JOURNAL = bool(os.environ.get("JOURNAL_STREAM"))


def _emit(stream, prefix, message):
    for line in str(message).splitlines() or [""]:
        stream.write((prefix if _JOURNAL else "") + line + "\n")
    stream.flush()


def info(message):
    _emit(sys.stdout, "<6>", message)


def warning(message):
    _emit(sys.stderr, "<4>", "warning: " + message)


def error(message):
    _emit(sys.stderr, "<3>", "error: " + message)
