#!/usr/bin/env python3
"""Fail unless setup.cfg, debian/changelog and rpm/azure-firstboot.spec carry one version."""
import os
import re
import sys

top = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def grab(path, pattern):
    path = os.path.join(top, path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        m = re.search(pattern, f.read(), re.M)
    return m.group(1) if m else "unparsable"


found = {
    "setup.cfg": grab("setup.cfg", r"^version\s*=\s*(\S+)"),
    "src/azure_firstboot/__init__.py": grab("src/azure_firstboot/__init__.py", r'^__version__ = "([^"]+)"'),
    "debian/changelog": grab("debian/changelog", r"^azure-firstboot \(([^)]+)\)"),
    "rpm/azure-firstboot.spec": grab("rpm/azure-firstboot.spec", r"^Version:\s*(\S+)"),
}
present = {k: v for k, v in found.items() if v is not None}
if len(set(present.values())) != 1:
    print("version mismatch: " + ", ".join("%s=%s" % kv for kv in sorted(present.items())))
    sys.exit(1)
print("version %s in %s" % (next(iter(present.values())), ", ".join(sorted(present))))
