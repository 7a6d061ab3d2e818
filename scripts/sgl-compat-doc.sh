#!/bin/sh
# docs/sgl-compat.md's table is the gateway's own (infergate --sgl-compat-table):
# rewrite it after a change to src/app/ig_sgl_compat.c; the e2e tests check it.
set -e
cd "$(dirname "$0")/.."
doc=docs/sgl-compat.md
head=$(sed '/^## The flags$/q' "$doc")
{ printf '%s\n\n' "$head"; ./build/infergate --sgl-compat-table; } > "$doc.new"
mv "$doc.new" "$doc"
