#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, makes sure a MariaDB
# answers on 127.0.0.1:3306 for the metadata tests, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium and chromium-driver: the web console's tests drive a real headless browser.
need=()
for p in openssl mariadb-server mariadb-client mariadb-backup zstd openssh-server openssh-client postgresql libssl-dev pkg-config chromium chromium-driver; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  echo "test.sh: installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
mkdir -p /run/sshd

# The metadata tests use a MariaDB on 127.0.0.1:3306 (root, no password); start one if none answers.
if ! mariadb -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1; then
  echo "test.sh: starting MariaDB on 127.0.0.1:3306"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  for _ in $(seq 1 60); do
    mariadb -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb -h127.0.0.1 -P3306 -uroot -e 'select 1' >/dev/null
fi
# Root's ~/.bashrc runs `pyenv rehash` at every SSH login; a login shell killed with SIGKILL
# leaves its lock file behind and each later login waits 60 s on it. Drop a lock older than a
# minute (no rehash takes that long).
find "${PYENV_ROOT:-$HOME/.pyenv}/shims" -maxdepth 1 -name .pyenv-shim -mmin +1 -delete 2>/dev/null || true

export KUNLUN_TEST_MYSQL_URL="${KUNLUN_TEST_MYSQL_URL:-mysql://root@127.0.0.1:3306}"

# The API fuzz (tests/tests/api/api_fuzz.rs) runs schemathesis from PyPI, pinned, in a venv under
# ~/.cache: installed here once (a no-op when present), so a missing one fails now, not mid-run.
bash scripts/fuzz/install.sh >/dev/null

cargo test --workspace --all-targets --no-fail-fast "$@"
