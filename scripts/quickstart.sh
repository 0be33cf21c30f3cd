#!/usr/bin/env bash
# Quickstart: one command from a fresh Debian machine (root, Rust toolchain) to a running
# cluster of 2 shards x 3 MariaDB nodes (rbr, semi-sync) + 1 PostgreSQL compute node on
# 127.0.0.1, provisioned by the real daemon over SSH.
#
#   scripts/quickstart.sh          install what is missing, build, start sshd + daemon, create the cluster
#   scripts/quickstart.sh stop     delete the clusters (kunlunctl cluster rm --wait), stop the daemon and sshd
#   scripts/quickstart.sh status   what is running
#
# With KUNLUN_QS_META=3 the metadata is not an SQLite file but a 3-node MySQL metadata shard:
# three MariaDB instances on 127.0.0.1 (GTID replication, lossless semi-sync, ports from
# KUNLUN_QS_META_PORT, default 33061), with a least-privilege metadata login for the daemon and
# the logins of the shard's own failover; the daemon runs on meta_backend = mysql with them as
# seeds (`kunlunctl meta show` lists them; kill -9 the primary's PID from `status` to see the
# failover). `stop` stops them too, by PID.
#
# Everything lives in one work dir: $KUNLUN_QS_DIR, else ./quickstart under the repository (or
# /var/tmp/kunlun-quickstart when the postgres or mysql user cannot reach the repository). The sshd is a
# private one (own config, host key and a throwaway client key, loopback only, high port); the
# system sshd, /etc/ssh and ~/.ssh are never touched. Processes are stopped by their recorded PIDs.
#
# Environment: KUNLUN_QS_DIR, KUNLUN_QS_HTTP_PORT (8010), KUNLUN_QS_SSH_PORT (first free from
# 22022), KUNLUN_QS_STORAGE_PORTS (57000-57099), KUNLUN_QS_COMPUTE_PORTS (47000-47099),
# KUNLUN_QS_NAME (cluster name, quickstart), KUNLUN_QS_INNODB_MB (128), KUNLUN_QS_SKIP_BUILD=1
# (use the binaries already in target/release), KUNLUN_QS_BIN (another folder of binaries),
# KUNLUN_QS_META (3 for a metadata shard; empty: SQLite), KUNLUN_QS_META_PORT (33061).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)

HOST=127.0.0.1
HTTP_PORT=${KUNLUN_QS_HTTP_PORT:-8010}
NAME=${KUNLUN_QS_NAME:-quickstart}
STORAGE_PORTS=${KUNLUN_QS_STORAGE_PORTS:-57000-57099}
COMPUTE_PORTS=${KUNLUN_QS_COMPUTE_PORTS:-47000-47099}
INNODB_MB=${KUNLUN_QS_INNODB_MB:-128}
SERVER="http://$HOST:$HTTP_PORT"
export KUNLUNCTL_SERVER=$SERVER
BIN=${KUNLUN_QS_BIN:-$REPO/target/release}
META_N=${KUNLUN_QS_META:-}
META_PORT=${KUNLUN_QS_META_PORT:-33061}

say() { echo "quickstart: $*"; }
die() { echo "quickstart: error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- work dir
# PostgreSQL runs as the `postgres` user and MariaDB as `mysql` (never root), so their instance
# dirs must be reachable by both.
can_reach() { ! id "$1" >/dev/null 2>&1 || runuser -u "$1" -- test -x "$2" 2>/dev/null; }
if [[ -n ${KUNLUN_QS_DIR:-} ]]; then
  QS=$KUNLUN_QS_DIR
elif can_reach postgres "$REPO" && can_reach mysql "$REPO"; then
  QS=$REPO/quickstart
else
  QS=/var/tmp/kunlun-quickstart
fi
DATA=$QS/instances
SSHD_PID=$QS/sshd.pid
KEYS=$QS/keys
KEY=$KEYS/id_ed25519
DAEMON_PID=$QS/cluster-mgr.pid
META=$QS/meta
# The metadata shard is on when asked for now, or when an earlier start made one.
if [[ -z $META_N && -f $META/ports ]]; then META_N=3; fi
[[ -z $META_N || $META_N = 3 ]] || { echo "quickstart: error: KUNLUN_QS_META must be 3 (or empty)" >&2; exit 1; }

# Whether the PID in file $1 runs (a zombie, never reaped by a PID 1 that does not reap, is dead).
alive() {
  local pid st
  [[ -f $1 ]] && pid=$(cat "$1") && [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [[ $st != Z ]]
}
port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
ctl() { "$BIN/kunlunctl" --server "$SERVER" "$@"; }

# launch PIDFILE LOG CMD...: starts CMD detached in its own session (it outlives this script,
# holds none of its descriptors) with its real PID in PIDFILE: the shell writes its own PID and
# then becomes the program, so no wrapper's PID is ever recorded.
launch() {
  local pidfile=$1 log=$2; shift 2
  rm -f "$pidfile"
  setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$log" 2>&1 &
  for _ in $(seq 1 50); do [[ -s $pidfile ]] && return 0; sleep 0.02; done
  die "could not start $1"
}

# Sends SIGTERM to the PID in $1, waits up to $2 s, then SIGKILL; removes the pid file.
stop_pid() {
  local f=$1 limit=${2:-15} pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if alive "$f"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 $((limit * 10))); do alive "$f" || break; sleep 0.1; done
    if alive "$f"; then say "PID $pid did not stop on SIGTERM; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$f"
}

# ---------------------------------------------------------------------------- packages
install_packages() {
  local need=() p
  for p in mariadb-server mariadb-client mariadb-backup zstd postgresql openssh-server openssh-client \
           libssl-dev pkg-config sqlite3 jq; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  ((${#need[@]})) || return 0
  [[ $(id -u) = 0 ]] || die "missing packages ${need[*]}; run as root or install them first"
  say "installing ${need[*]}"
  # The packages must not start the system's MariaDB, PostgreSQL or sshd: a temporary
  # policy-rc.d (unless the machine already has one) tells their scripts not to.
  local policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy"
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  local log
  log=$(mktemp /tmp/kunlun-quickstart-apt.XXXXXX)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
           --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "apt-get install failed (whole log: $log)"
  fi
  rm -f "$log"
  if [[ -n $policy ]]; then rm -f "$policy"; trap - EXIT; fi
}

build() {
  if [[ -n ${KUNLUN_QS_SKIP_BUILD:-} && -x $BIN/cluster-mgr && -x $BIN/kunlunctl ]]; then
    say "using the binaries in $BIN (KUNLUN_QS_SKIP_BUILD)"; return
  fi
  command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (https://rustup.rs) first"
  say "building cluster-mgr and kunlunctl (release)"
  cargo build --release --quiet -p cluster-mgr-bin -p kunlunctl
}

# ---------------------------------------------------------------------------- sshd
start_sshd() {
  mkdir -p "$QS" "$DATA" /run/sshd
  chmod 0755 "$QS" "$DATA"
  if alive "$SSHD_PID"; then say "sshd already running (PID $(cat "$SSHD_PID"), port $(cat "$QS/sshd.port"))"; return; fi
  # The client key lives in the daemon's ssh_keys_dir (0700; the key 0600, owned by us).
  mkdir -p "$KEYS" && chmod 0700 "$KEYS"
  if [[ ! -f $KEY && -f $QS/id_ed25519 ]]; then mv "$QS/id_ed25519" "$KEY" && mv "$QS/id_ed25519.pub" "$KEY.pub"; fi
  [[ -f $KEY ]] || ssh-keygen -q -t ed25519 -N '' -C kunlun-quickstart -f "$KEY"
  chmod 0600 "$KEY"
  [[ -f $QS/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C kunlun-quickstart-host -f "$QS/ssh_host_ed25519_key"
  cp "$KEY.pub" "$QS/authorized_keys"
  local port=${KUNLUN_QS_SSH_PORT:-}
  if [[ -z $port ]]; then
    port=$(cat "$QS/sshd.port" 2>/dev/null || echo 22022)
    while port_busy "$port"; do port=$((port + 1)); done
  elif port_busy "$port"; then
    die "KUNLUN_QS_SSH_PORT=$port is already in use"
  fi
  cat >"$QS/sshd_config" <<EOF
# private sshd of the quickstart; loopback only
ListenAddress $HOST:$port
HostKey $QS/ssh_host_ed25519_key
PidFile $QS/sshd.self.pid
AuthorizedKeysFile $QS/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxSessions 100
MaxStartups 200:30:400
Subsystem sftp internal-sftp
EOF
  launch "$SSHD_PID" /dev/null /usr/sbin/sshd -D -f "$QS/sshd_config" -E "$QS/sshd.log"
  echo "$port" >"$QS/sshd.port"
  for _ in $(seq 1 100); do port_busy "$port" && break; alive "$SSHD_PID" || break; sleep 0.1; done
  alive "$SSHD_PID" && port_busy "$port" || { tail -n 20 "$QS/sshd.log" >&2; die "sshd did not start"; }
  # A first login proves the key and the config work before the daemon depends on them.
  ssh -q -p "$port" -i "$KEY" -o BatchMode=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5 "root@$HOST" true \
    || die "cannot log in to the private sshd on $HOST:$port (log: $QS/sshd.log)"
  say "private sshd on $HOST:$port (PID $(cat "$SSHD_PID"))"
}

# ---------------------------------------------------------------------------- metadata shard
# Three MariaDB nodes for the metadata (KUNLUN_QS_META=3), run as `mysql`: node 1 starts as the
# primary, nodes 2 and 3 replicate from it (GTID, semi-sync after sync); the logins:
#   klmeta      the daemon's store login (meta_user): ALL on kunlun_metadata_db only, nothing
#               global, so a read-only (fenced) node refuses its writes;
#   klmeta_ha   the failover's admin login (meta_ha_user): read_only, replication and monitor
#               privileges, no data privilege;
#   klmeta_repl what replicas log in to their source with (meta_repl_user).
# Passwords are random, kept in $META/logins (0600) and the daemon's cnf (0600).
meta_sql() { mariadb --no-defaults -uroot -S "$META/n$1/mysqld.sock" -N -B -e "$2"; }

start_meta() {
  [[ -n $META_N ]] || return 0
  mkdir -p "$META" && chmod 0755 "$META"
  local i port fresh=0 dir ro
  if [[ ! -f $META/ports ]]; then
    port=$META_PORT
    : >"$META/ports.new"
    for i in 1 2 3; do
      while port_busy "$port"; do port=$((port + 1)); done
      echo "$port" >>"$META/ports.new"; port=$((port + 1))
    done
    mv "$META/ports.new" "$META/ports"
    fresh=1
  fi
  if [[ ! -f $META/logins ]]; then
    (umask 077; printf 'STORE_PWD=%s\nHA_PWD=%s\nREPL_PWD=%s\n' "$(openssl rand -hex 12)" \
       "$(openssl rand -hex 12)" "$(openssl rand -hex 12)" >"$META/logins")
  fi
  for i in 1 2 3; do
    port=$(sed -n "${i}p" "$META/ports")
    dir=$META/n$i
    if alive "$dir/pid"; then continue; fi
    if [[ ! -d $dir/data ]]; then
      mkdir -p "$dir/data"
      chown -R mysql:mysql "$dir"
      mariadb-install-db --no-defaults --user=mysql --datadir="$dir/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
        || { tail -n 20 "$dir/install.log" >&2; die "mariadb-install-db for metadata node $i failed"; }
    fi
    chown -R mysql:mysql "$dir"
    port_busy "$port" && die "port $port of metadata node $i is in use (remove $META to pick others)"
    # Every node but the primary comes back read-only: the one the daemon followed when it
    # was stopped ($META/primary), else the one that does not replicate (no master.info),
    # node 1 at first. The daemon repoints the others at it.
    ro=OFF
    if [[ -s $META/primary ]]; then
      [[ $(cat "$META/primary") = "$HOST:$port" ]] || ro=ON
    elif [[ -f $dir/data/master.info ]] || { [[ $fresh = 1 ]] && [[ $i != 1 ]]; }; then
      ro=ON
    fi
    launch "$dir/pid" "$dir/stdout.log" /usr/sbin/mariadbd --no-defaults --user=mysql \
      --datadir="$dir/data" --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
      --log-error="$dir/error.log" --port="$port" --bind-address=$HOST --server-id=$((900 + i)) \
      --log-bin=mysql-bin --relay-log=relay-bin --binlog-format=ROW --log-slave-updates=ON \
      --gtid-strict-mode=ON --sync-binlog=1 --innodb-flush-log-at-trx-commit=1 \
      --skip-name-resolve --innodb-buffer-pool-size=64M --read-only=$ro \
      --rpl-semi-sync-master-enabled=ON --rpl-semi-sync-slave-enabled=ON \
      --rpl-semi-sync-master-wait-point=AFTER_SYNC --rpl-semi-sync-master-timeout=10000
  done
  for i in 1 2 3; do
    for _ in $(seq 1 300); do meta_sql "$i" 'SELECT 1' >/dev/null 2>&1 && break; alive "$META/n$i/pid" || break; sleep 0.1; done
    meta_sql "$i" 'SELECT 1' >/dev/null 2>&1 || { tail -n 20 "$META/n$i/error.log" >&2; die "metadata node $i did not start"; }
  done
  if [[ ! -f $META/initialized ]]; then
    # shellcheck disable=SC1091
    . "$META/logins"
    local p1 pos
    p1=$(sed -n 1p "$META/ports")
    meta_sql 1 "CREATE USER 'klmeta'@'$HOST' IDENTIFIED BY '$STORE_PWD';
      GRANT ALL PRIVILEGES ON kunlun_metadata_db.* TO 'klmeta'@'$HOST';
      CREATE USER 'klmeta_ha'@'$HOST' IDENTIFIED BY '$HA_PWD';
      GRANT READ_ONLY ADMIN, REPLICATION SLAVE ADMIN, REPLICATION MASTER ADMIN, SLAVE MONITOR,
            BINLOG MONITOR, RELOAD ON *.* TO 'klmeta_ha'@'$HOST';
      CREATE USER 'klmeta_repl'@'$HOST' IDENTIFIED BY '$REPL_PWD';
      GRANT REPLICATION SLAVE ON *.* TO 'klmeta_repl'@'$HOST';"
    for i in 2 3; do
      meta_sql "$i" "CHANGE MASTER TO MASTER_HOST='$HOST', MASTER_PORT=$p1, MASTER_USER='klmeta_repl',
        MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1,
        MASTER_PASSWORD='$REPL_PWD'; START SLAVE; SET GLOBAL read_only=ON;
        SET GLOBAL rpl_semi_sync_master_enabled=OFF"
    done
    pos=$(meta_sql 1 'SELECT @@gtid_binlog_pos')
    for i in 2 3; do
      [[ $(meta_sql "$i" "SELECT MASTER_GTID_WAIT('$pos', 30)") = 0 ]] \
        || die "metadata node $i does not replicate (see $META/n$i/error.log)"
    done
    touch "$META/initialized"
  fi
  say "metadata shard: 3 MariaDB nodes on $(sed "s/^/$HOST:/" "$META/ports" | paste -sd' ') (PIDs $(cat "$META"/n{1,2,3}/pid | paste -sd' '))"
}

# The daemon's cnf lines for the metadata shard.
meta_cnf() {
  # shellcheck disable=SC1091
  . "$META/logins"
  local seeds
  seeds=$(sed "s/^/$HOST:/" "$META/ports" | paste -sd,)
  printf 'meta_backend = mysql\nmeta_group_seeds = %s\nmeta_user = klmeta\nmeta_pwd = %s\n' "$seeds" "$STORE_PWD"
  printf 'meta_ha_user = klmeta_ha\nmeta_ha_pwd = %s\nmeta_repl_user = klmeta_repl\nmeta_repl_pwd = %s\n' "$HA_PWD" "$REPL_PWD"
}

# Records the nodes in meta_db_nodes once the daemon created the database, the writable one
# as source (nothing when rows exist already).
register_meta_nodes() {
  [[ -n $META_N ]] || return 0
  local i port w=""
  for i in 1 2 3; do [[ $(meta_sql "$i" 'SELECT @@read_only' 2>/dev/null) = 0 ]] && w=$i; done
  [[ -n $w ]] || die "no writable metadata node"
  [[ $(meta_sql "$w" 'SELECT COUNT(*) FROM kunlun_metadata_db.meta_db_nodes') = 0 ]] || return 0
  for i in 1 2 3; do
    port=$(sed -n "${i}p" "$META/ports")
    meta_sql "$w" "INSERT INTO kunlun_metadata_db.meta_db_nodes (hostaddr, port, user_name, passwd, member_state)
      VALUES ('$HOST', $port, 'klmeta', '', '$([[ $i = "$w" ]] && echo source || echo replica)')"
  done
  say "registered the metadata nodes in meta_db_nodes"
}

stop_meta() {
  [[ -d $META ]] || return 0
  local i
  for i in 1 2 3; do
    if alive "$META/n$i/pid"; then say "stopping metadata node $i (PID $(cat "$META/n$i/pid"))"; fi
    stop_pid "$META/n$i/pid" 60
  done
}

# ---------------------------------------------------------------------------- daemon
start_daemon() {
  if alive "$DAEMON_PID"; then say "cluster-mgr already running (PID $(cat "$DAEMON_PID"), $SERVER)"; return; fi
  port_busy "$HTTP_PORT" && die "port $HTTP_PORT is in use; set KUNLUN_QS_HTTP_PORT to another port"
  # Keys confined to $KEYS; the private sshd is a new host on every fresh work dir, so its host
  # key is recorded on first contact (accept-new) instead of the default strict policy.
  (umask 077; printf 'ssh_keys_dir = %s\nssh_host_key_policy = accept-new\n' "$KEYS" >"$QS/cluster_mgr.cnf")
  local where=(--sqlite-path "$QS/cluster_mgr.sqlite3")
  if [[ -n $META_N ]]; then
    meta_cnf >>"$QS/cluster_mgr.cnf"
    where=()
  fi
  (cd "$QS" && RUST_LOG=${RUST_LOG:-info} launch "$DAEMON_PID" "$QS/cluster-mgr.log" "$BIN/cluster-mgr" \
     --config "$QS/cluster_mgr.cnf" --http-bind "$HOST" --http-port "$HTTP_PORT" "${where[@]}")
  for _ in $(seq 1 300); do
    curl -fsS "$SERVER/healthz" >/dev/null 2>&1 && break
    alive "$DAEMON_PID" || break
    sleep 0.1
  done
  curl -fsS "$SERVER/healthz" >/dev/null 2>&1 || { tail -n 30 "$QS/cluster-mgr.log" >&2; die "cluster-mgr did not answer on $SERVER"; }
  if [[ -n $META_N ]]; then
    say "cluster-mgr on $SERVER (PID $(cat "$DAEMON_PID"), metadata shard on ports $(paste -sd, "$META/ports"), log $QS/cluster-mgr.log)"
  else
    say "cluster-mgr on $SERVER (PID $(cat "$DAEMON_PID"), SQLite $QS/cluster_mgr.sqlite3, log $QS/cluster-mgr.log)"
  fi
}

# Registers 127.0.0.1 as a storage and a computer machine, or updates the rows to the current
# sshd port and key when they exist from an earlier run.
register_machines() {
  local port type range id
  port=$(cat "$QS/sshd.port")
  for type in storage computer; do
    range=$STORAGE_PORTS; [[ $type = computer ]] && range=$COMPUTE_PORTS
    id=$(ctl --json machine list | jq -r --arg t "$type" --arg h "$HOST" \
           '.[] | select(.hostaddr == $h and .machine_type == $t) | .id' | head -n1)
    if [[ -z $id ]]; then
      ctl machine add --host "$HOST" --type "$type" --ssh-port "$port" --ssh-user root \
        --ssh-key "$KEY" --data-dir "$DATA" --port-range "$range" >/dev/null
      say "registered $HOST as a $type machine (ports $range, data under $DATA)"
    else
      ctl machine update "$id" --ssh-port "$port" --ssh-key "$KEY" >/dev/null
      say "$HOST is already a $type machine (id $id)"
    fi
  done
}

cluster_id() {
  ctl --json cluster list | jq -r --arg n "$1" '.[] | select(.name == $n) | .id' | head -n1
}

create_cluster() {
  local id
  id=$(cluster_id "$NAME")
  if [[ -n $id ]]; then
    say "cluster $NAME exists already (id $id)"
    ctl cluster show "$id"
    return
  fi
  say "creating cluster $NAME: 2 shards x 3 nodes (rbr) + 1 compute node"
  local t0=$SECONDS
  ctl cluster create "$NAME" --ha-mode rbr --shards 2 --nodes 3 --comps 1 \
    --innodb-size-mb "$INNODB_MB" --wait --wait-timeout 900
  say "cluster created in $((SECONDS - t0)) s"
}

how_to_connect() {
  local id detail
  id=$(cluster_id "$NAME")
  [[ -n $id ]] || return 0
  detail=$(ctl --json cluster show "$id")
  local db=$QS/cluster_mgr.sqlite3 prim comp cport
  prim=$(jq -r '.shards[].nodes[] | select(.member_state == "source") | "\(.port)"' <<<"$detail" | head -n1)
  comp=$(jq -r '.comp_nodes[0].port // empty' <<<"$detail")
  cat <<EOF

================================================================================
Cluster "$NAME" is running on $HOST (work dir $QS).

Storage shards (MariaDB; user clustmgr, the manager's admin user):
$(jq -r '.shards[] | .shard.name as $s | .nodes[] | "  \($s)  \(.member_state)\t\(.hostaddr):\(.port)"' <<<"$detail")
Compute node (PostgreSQL; user abc):
$(jq -r '.comp_nodes[] | "  \(.name)\t\(.hostaddr):\(.port)"' <<<"$detail")

Passwords are random per cluster and kept in the daemon's metadata (never printed):
$(if [[ -n $META_N ]]; then
    echo "  mariadb -uroot -S <the primary's socket, $META/n<i>/mysqld.sock> kunlun_metadata_db \\"
    echo "    -e 'SELECT hostaddr, port, user_name, passwd FROM shard_nodes'"
    echo "  (kunlunctl meta show says which metadata node is the primary)"
  else
    echo "  sqlite3 $db \"SELECT hostaddr, port, user_name, passwd FROM shard_nodes\""
    echo "  sqlite3 $db \"SELECT hostaddr, port, user_name, passwd FROM comp_nodes\""
  fi)

Connect over TCP:
  mariadb -h $HOST -P $prim -u clustmgr -p
  psql -h $HOST -p $comp -U abc postgres
or, on this host, without a password (socket login as root / postgres):
  mariadb -S $DATA/kunlun/storage_$prim/run/mysqld.sock -u root
  runuser -u postgres -- psql -h $DATA/kunlun/compute_$comp/run -p $comp postgres

Manage it:
  export KUNLUNCTL_SERVER=$SERVER
  $BIN/kunlunctl cluster show $id
  $BIN/kunlunctl machine list
  $BIN/kunlunctl meta show       (the metadata store; with KUNLUN_QS_META=3 its 3 nodes)
or in a browser: the web console at $SERVER/ui/
  (open mode until a token exists: "Continue without a token"; then log in with one)

Stop everything (deletes the cluster, stops the daemon and the private sshd):
  scripts/quickstart.sh stop
================================================================================
EOF
  if [[ -n $META_N ]]; then ctl meta show; fi
}

# ---------------------------------------------------------------------------- stop
stop_all() {
  local failed=0 ids id
  if [[ -f $QS/cluster_mgr.sqlite3 || -f $META/initialized ]] && [[ -x $BIN/kunlunctl ]]; then
    # The daemon removes the instances over SSH, so both must run for the delete.
    if ! alive "$DAEMON_PID" || ! alive "$SSHD_PID"; then
      start_meta
      start_sshd
      start_daemon
      register_machines
    fi
    ids=$(ctl --json cluster list | jq -r '.[].id')
    for id in $ids; do
      say "deleting cluster $id"
      ctl cluster rm "$id" --wait --wait-timeout 600 || failed=1
    done
  fi
  if ((failed)); then
    echo "quickstart: a cluster could not be deleted; the daemon and sshd stay up so you can retry" >&2
    echo "            (scripts/quickstart.sh stop), or see $QS/cluster-mgr.log" >&2
    exit 1
  fi
  if [[ -n $META_N ]] && alive "$DAEMON_PID"; then
    # Which metadata node is the primary now (a failover may have moved it): the next start
    # opens only that one for writes.
    ctl --json meta show | jq -r '.follow.primary // empty' >"$META/primary.new" 2>/dev/null \
      && [[ -s $META/primary.new ]] && mv "$META/primary.new" "$META/primary"
    rm -f "$META/primary.new"
  fi
  alive "$DAEMON_PID" && say "stopping cluster-mgr (PID $(cat "$DAEMON_PID"))"
  stop_pid "$DAEMON_PID" 20
  alive "$SSHD_PID" && say "stopping the private sshd (PID $(cat "$SSHD_PID"))"
  stop_pid "$SSHD_PID" 5
  stop_meta
  say "stopped; $QS keeps the metadata, keys and logs (remove it to start from scratch)"
}

status() {
  if [[ -f $META/ports ]]; then
    local i
    for i in 1 2 3; do
      if alive "$META/n$i/pid"; then echo "meta node $i: PID $(cat "$META/n$i/pid"), $HOST:$(sed -n "${i}p" "$META/ports")"
      else echo "meta node $i: not running"; fi
    done
  fi
  if alive "$SSHD_PID"; then echo "sshd:        PID $(cat "$SSHD_PID"), $HOST:$(cat "$QS/sshd.port")"; else echo "sshd:        not running"; fi
  if alive "$DAEMON_PID"; then
    echo "cluster-mgr: PID $(cat "$DAEMON_PID"), $SERVER"
    ctl cluster list
    if [[ -n $META_N ]]; then ctl meta show; fi
  else
    echo "cluster-mgr: not running"
  fi
}

# The whole command is read before it runs, so editing this file meanwhile cannot derail it.
main() {
  case ${1:-start} in
    start)
      install_packages
      build
      start_meta
      start_sshd
      start_daemon
      register_meta_nodes
      register_machines
      create_cluster
      how_to_connect
      ;;
    stop) stop_all ;;
    status) status ;;
    -h|--help|help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command ${1}; use start (default), stop or status" ;;
  esac
}
main "$@"; exit $?
