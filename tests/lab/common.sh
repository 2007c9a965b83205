# Shared settings and helpers of tests/lab/{up,down}. Sourced, not run.
# shellcheck shell=bash

LAB_STATE=${ROLL_LAB_STATE:-/var/lib/roll-lab}
LAB_CACHE=/var/cache/roll-lab
LAB_WHEELS=$LAB_CACHE/wheels
LAB_PWFILE=$LAB_STATE/broker-password
LAB_SSHD_DIR=$LAB_STATE/sshd
LAB_SSHD_CONFIG=$LAB_SSHD_DIR/sshd_config
LAB_SSHD_PID=$LAB_SSHD_DIR/sshd.pid
LAB_SSHD_PORT=2222
LAB_SSH_DIR=$LAB_STATE/ssh
LAB_TOOLS_VENV=$LAB_STATE/tools-venv
LAB_BROKER_USER=roll-lab
LAB_MGMT=http://127.0.0.1:15672
LAB_VHOSTS=(dev stage ops)
LAB_EXCHANGE=xpublic

# host:vhost, in inventory order (inventory/lab.toml)
LAB_HOSTS=(
  dev1:dev dev2:dev
  stage1:stage stage2:stage
  px1:ops px2:ops px3:ops px4:ops px5:ops px6:ops px7:ops px8:ops
  pxatx1:ops pxatx2:ops
)
LAB_PASSIVE=pxatx2                                   # configured, never started
LAB_CLUSTER_QUEUE=q_roll-lab.subscribe.cluster.ops   # shared by every ops host
LAB_FOREIGN_QUEUE=q_anonymous.subscribe.ddi-cmc.ddi1_cmc_20260101
LAB_FOREIGN_KEY='v03.foreign.#'
LAB_SR3_VERSION=3.2.0.post1
LAB_SR3_VERSIONS=(3.2.0.post1 3.3.1)                 # the wheelhouse holds both
# The wheel the lab playbooks copy to the hosts as an artifact: their [[artifacts]] pin this
# file and its sha256 (PyPI's files never change).
LAB_SR3_WHEEL=metpx_sr3-3.3.1-py3-none-any.whl
LAB_SR3_WHEEL_SHA256=f9799a1112d3f59f70391019cc20883e3b50802e5d08480e9b77dfe45108d473

# Debian's interpreter: root's PATH may have a pyenv shim first.
SYS_PYTHON=/usr/bin/python3

say()  { printf "[lab %3ds] %s\n" "$SECONDS" "$*"; }
warn() { printf '[lab] WARNING: %s\n' "$*" >&2; }
die()  { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

host_of()  { printf '%s' "${1%%:*}"; }
vhost_of() { printf '%s' "${1##*:}"; }

# Run a command as a lab user with a clean login-like environment
# (USER/HOME/LOGNAME set, no root pyenv on PATH).
as_user() {
  local u=$1; shift
  runuser -u "$u" -- env -i HOME="/home/$u" USER="$u" LOGNAME="$u" SHELL=/bin/bash \
    PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 "$@"
}

# curl against the management API as roll-lab; the password goes through a
# curl config on stdin so it never shows in a process list.
# usage: mgmt METHOD PATH [JSON]  -> sets MGMT_CODE (000: no answer); the body
# is in the file $MGMT_BODY (read it with mgmt_body). Never run it in $(...):
# MGMT_CODE would be lost.
# MGMT_TIMEOUT=S for a slow call (deleting a vhost of 20,000 queues takes the broker ~40 s)
mgmt() {
  local method=$1 path=$2 data=${3-} code pw
  pw=$(cat "$LAB_PWFILE")
  local args=(-sS --max-time "${MGMT_TIMEOUT:-15}" -X "$method" -o "$MGMT_BODY" -w '%{http_code}'
              -H 'content-type: application/json' -K -)
  [[ -n $data ]] && args+=(--data-binary "$data")
  : >"$MGMT_BODY"
  code=$(printf 'user = "%s:%s"\n' "$LAB_BROKER_USER" "$pw" | curl "${args[@]}" "$LAB_MGMT$path" 2>/dev/null) || code=000
  MGMT_CODE=$code
}
mgmt_body() { cat "$MGMT_BODY"; }
MGMT_BODY=$(mktemp /tmp/roll-lab-mgmt.XXXXXX)
LAB_CLEANUP=("rm -f '$MGMT_BODY'")
lab_cleanup() { local c; for c in "${LAB_CLEANUP[@]}"; do eval "$c" || true; done; }
trap lab_cleanup EXIT

# percent-encode one path segment
urlenc() { "$SYS_PYTHON" -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' "$1"; }

broker_running() { rabbitmqctl -q --timeout 10 ping >/dev/null 2>&1; }
# The node's log without its repeated noise (mnesia overload, logger_proxy), last 20 lines.
broker_log_tail() {
  local f
  f=$(ls -t /var/log/rabbitmq/rabbit@*.log 2>/dev/null | grep -v _upgrade | head -n 1)
  [[ -n $f ]] || { echo "(no log in /var/log/rabbitmq)"; return 0; }
  grep -v -e 'overloaded' -e 'logger_proxy' -e '\] <[0-9.]*> *$' "$f" | tail -n 20
}

# live (non-zombie) processes of a user? Zombies of reparented sr3 daemons may
# linger until PID 1 reaps them; they do not matter.
user_has_procs() { ps -u "$1" -o stat= 2>/dev/null | grep -qv '^Z'; }

# ------------------------------------------------ light hosts (up --hosts N)
# Benchmark hosts b001..bNNN: OS users rb-<host> behind the lab sshd, no sr3.
# Their "service" is a state file (~/svc/state: running|stopped) and a version
# file (~/svc/version), so that a controller's own cost is what gets measured.
# They live in their own vhost, never in dev/stage/ops.
LAB_BENCH_VHOST=bench
LAB_BENCH_QUEUES_VHOST=bench-queues      # bench/run's 20,000 queues (made and removed there)
LAB_BENCH_USER_PREFIX=rb-
LAB_BENCH_COMMENT="roll lab light host"  # the GECOS mark of a light-host user
LAB_BENCH_MAX=999

bench_host() { printf 'b%03d' "$1"; }    # 7 -> b007

# The light-host users that exist now, one a line (recognised by name and mark).
bench_users() {
  getent passwd | awk -F: -v c="$LAB_BENCH_COMMENT" \
    '$1 ~ /^rb-b[0-9][0-9][0-9]$/ && index($5, c) == 1 { print $1 }'
}

# Remove light-host users (and everything they run) given as arguments.
bench_users_remove() {
  (($#)) || return 0
  local u left
  for u in "$@"; do pkill -TERM -u "$u" 2>/dev/null || true; done
  for _ in $(seq 30); do
    left=0
    for u in "$@"; do user_has_procs "$u" && left=1; done
    ((left)) || break
    sleep 0.1
  done
  for u in "$@"; do pkill -KILL -u "$u" 2>/dev/null || true; done
  for u in "$@"; do
    userdel --remove "$u" 2>/dev/null || userdel --remove --force "$u" 2>/dev/null \
      || die "userdel $u failed"
    # userdel usually removes the user's group too: a missing group is fine
    if getent group "$u" >/dev/null; then groupdel "$u" 2>/dev/null || true; fi
  done
  return 0
}
