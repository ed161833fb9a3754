"""The packages carry the documentation: README, docs/ and examples/ under
/usr/share/doc/azure-firstboot, and the same set of documents in both formats."""

import os

from conftest import run

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = "/usr/share/doc/azure-firstboot/"


def expected():
    names = ["README.md"]
    names += ["docs/" + n for n in sorted(os.listdir(os.path.join(TOP, "docs"))) if n.endswith(".md")]
    for base, _, files in os.walk(os.path.join(TOP, "examples")):
        names += [os.path.relpath(os.path.join(base, n), TOP) for n in files]
    return names


def strip_gz(paths):
    # dh_compress gzips larger documents (Debian policy); the name is what matters
    return set(p[:-3] if p.endswith(".gz") else p for p in paths)


def test_deb_installs_readme_docs_and_examples(deb):
    files = strip_gz("/" + line.split()[-1].lstrip("./") for line in
                     run(["dpkg-deb", "-c", deb]).stdout.splitlines() if not line.startswith("d"))
    for name in expected():
        assert DOC + name in files, name


def test_rpm_installs_readme_docs_and_examples(rpm):
    files = strip_gz(run(["rpm", "-qp", "--docfiles", rpm]).stdout.split())
    for name in expected():
        assert DOC + name in files, name
