#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned below) for the API fuzz test (tests/tests/api/api_fuzz.rs)
# into a venv under ~/.cache, once; prints the path of its `schemathesis` binary on the last
# line. Quick and silent when already installed. Set KUNLUN_SCHEMATHESIS to use another binary.
set -euo pipefail
VERSION=4.32.5

if [[ -n "${KUNLUN_SCHEMATHESIS:-}" ]]; then
  echo "$KUNLUN_SCHEMATHESIS"
  exit 0
fi
base="${XDG_CACHE_HOME:-$HOME/.cache}/kunlun-fuzz"
venv="$base/venv-$VERSION"
st="$venv/bin/schemathesis"
mkdir -p "$base"
# One installer at a time (test.sh and the test itself may both ask).
exec 9>"$base/install.lock"
flock -w 600 9

if ! "$st" --version 2>/dev/null | grep -qF "$VERSION"; then
  # A Python >= 3.12 when there is one (3.11.7's ast.parse is not thread-safe, which
  # schemathesis trips over with several workers; the test runs one), else python3.
  py=""
  for c in python3.13 python3.12 "$HOME"/.pyenv/versions/3.1[2-9]*/bin/python3 python3; do
    if "$c" -c 'import sys, venv; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
      py="$c"
      break
    fi
  done
  [[ -n "$py" ]] || { echo "install.sh: no Python >= 3.10 with venv found" >&2; exit 1; }
  echo "install.sh: installing schemathesis $VERSION into $venv with $py" >&2
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" >&2
  "$st" --version | grep -qF "$VERSION"
fi
echo "$st"
