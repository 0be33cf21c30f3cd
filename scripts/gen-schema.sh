#!/usr/bin/env bash
# Regenerates kunlun-meta/src/store/schema.rs from the SQLite migrations.
# The MySQL migrations declare the same tables and columns; the test
# kunlun-meta/tests/schema.rs proves both backends match this file.
# Uses `diesel print-schema` (cargo install diesel_cli --no-default-features --features sqlite)
# when installed, else scripts/print_schema_sqlite.py, which prints the same format.
set -euo pipefail
cd "$(dirname "$0")/.."
db="$(mktemp -d)/schema.db"
trap 'rm -rf "$(dirname "$db")"' EXIT
for f in kunlun-meta/migrations/sqlite/*/up.sql; do sqlite3 "$db" < "$f"; done
out=kunlun-meta/src/store/schema.rs
if command -v diesel >/dev/null 2>&1; then
  diesel print-schema --config-file diesel.toml --database-url "$db" > "$out.tmp"
else
  python3 scripts/print_schema_sqlite.py "$db" > "$out.tmp"
fi
mv "$out.tmp" "$out"
echo "wrote $out"
