# Shim for tools that still call setup.py (stdeb); all metadata lives in setup.cfg.
from setuptools import setup
setup()
