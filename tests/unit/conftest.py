"""Put tests/ (fabric_emulator) and src/ (azure_firstboot) on sys.path."""
import os
import sys

_TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
for _p in (os.path.join(_TOP, "src"), os.path.join(_TOP, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)
