#!/bin/bash
# Reproducibility check, run by "make pkg-check" after the builds: rebuild the
# packages from the same source tarball (fresh build directories, a later wall
# clock, same SOURCE_DATE_EPOCH) and compare them byte for byte with dist/.
# The source tarball itself is re-staged and compared when the checkout is clean
# (in a shared working tree, someone else's edit in between would be a false alarm).
#   usage: tests/pkg/repro.sh SDIST -- PACKAGE...
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
: "${SOURCE_DATE_EPOCH:?run through make (it derives SOURCE_DATE_EPOCH from git)}"
sdist=$1; shift
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "usage: $0 SDIST -- PACKAGE..." >&2; exit 2; }
fail=0

if [ -z "$(git status --porcelain)" ]; then
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    prefix=$(tar -tzf "$sdist" | awk -F/ 'NR == 1 { print $1 }')  # reads all: no SIGPIPE
    tests/pkg/stage.sh "$tmp/sdist.tar.gz" "$prefix"
    if cmp -s "$sdist" "$tmp/sdist.tar.gz"; then
        echo "reproducible: $sdist"
    else
        echo "NOT reproducible: $sdist"; fail=1
    fi
else
    echo "skipped: $sdist (checkout not clean)"
fi

before=$(sha256sum "$@")
sleep 1   # a leaked build-time clock would show up
${MAKE:-make} -s --no-print-directory STAGE=no deb deb-stdeb rpm >/dev/null
after=$(sha256sum "$@")
if [ "$before" = "$after" ]; then
    echo "reproducible (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH):"
    echo "$after" | sed 's/^/  /'
else
    echo "NOT reproducible (SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH):"
    diff <(echo "$before") <(echo "$after") | sed 's/^/  /' || true
    fail=1
fi
exit $fail
