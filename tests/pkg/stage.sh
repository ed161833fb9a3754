#!/bin/bash
# Write a reproducible source tarball of the checkout as git sees it (tracked and
# untracked files, minus .gitignore'd ones; uncommitted edits included), so that
# package builds run in a copy and never write into the checkout or its parent.
#   usage: tests/pkg/stage.sh OUT.tar.gz PREFIX     (SOURCE_DATE_EPOCH sets every mtime)
set -euo pipefail
out=$1 prefix=$2
: "${SOURCE_DATE_EPOCH:?set SOURCE_DATE_EPOCH}"
cd "$(git rev-parse --show-toplevel)"
list=$(mktemp)
trap 'rm -f "$list" "$out.tmp"' EXIT
git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do
    [ -f "$f" ] && printf '%s\0' "$f"
done >"$list"
mkdir -p "$(dirname "$out")"
tar --null -T "$list" --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 \
    --numeric-owner --mode=go-w --transform="s,^,$prefix/," -cf - | gzip -9n >"$out.tmp"
mv "$out.tmp" "$out"
