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
  q1:quorum q2:quorum q3:quorum q4:quorum
)
# Celery worker hosts on the cluster (vhost celery): OS users rl-cw1..4, Celery in ~/venv, the
# app files of playbooks/files/celery in ~/app, one worker each. No sr3.
LAB_CELERY_HOSTS=(cw1:celery cw2:celery cw3:celery cw4:celery)
LAB_ALL_HOSTS=("${LAB_HOSTS[@]}" "${LAB_CELERY_HOSTS[@]}")
LAB_CELERY_VERSION=5.4.0
LAB_CELERY_SPEC=("celery==5.4.0" "kombu>=5.3,<5.4")     # what a celery host's venv gets
LAB_CELERY_TARGET_SPEC=("celery==5.5.3" "kombu>=5.5,<5.6")  # the next release (its own kombu 5.5)
LAB_CELERY_WHEELS=$LAB_CACHE/celery-wheels
LAB_CELERY_FILES=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../playbooks/files/celery" 2>/dev/null && pwd)
LAB_CELERY_QUEUE=tasks
is_celery_host() { [[ " ${LAB_CELERY_HOSTS[*]} " == *" $1:"* ]]; }
LAB_PASSIVE=pxatx2                                   # configured, never started
LAB_CLUSTER_QUEUE=q_roll-lab.subscribe.cluster.ops   # shared by every ops host
# Groups whose hosts also share one queue (config cluster.conf): q_roll-lab.subscribe.cluster.<vhost>
LAB_SHARED_VHOSTS=(ops quorum)
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
# The single node's Erlang VM (not a cluster node roll-cN, whose environment names it).
broker_beam_pid() {
  local pid
  for pid in $(pgrep -u rabbitmq -x beam.smp); do
    tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -q '^RABBITMQ_NODENAME=roll-c' && continue
    printf '%s' "$pid"; return 0
  done
  return 0
}
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

# ------------------------------------------------------------ the cluster
# Three RabbitMQ nodes beside the single node (which stays on 5672/15672): roll-c1..3@<short
# hostname>, AMQP 5681..5683, management API 15681..15683, Erlang distribution 25681..25683,
# data in $LAB_CLUSTER_DIR/cN, logs /var/log/rabbitmq/roll-cN@<host>.log. c2 and c3 are
# joined to c1. Index i is 1, 2 or 3 (cN names accepted by cluster_index).
LAB_SHORT_HOST=$(hostname -s)
LAB_CLUSTER_NODES=("roll-c1@$LAB_SHORT_HOST" "roll-c2@$LAB_SHORT_HOST" "roll-c3@$LAB_SHORT_HOST")
LAB_CLUSTER_AMQP_PORTS=(5681 5682 5683)
LAB_CLUSTER_MGMT_PORTS=(15681 15682 15683)
LAB_CLUSTER_DIST_PORTS=(25681 25682 25683)
LAB_CLUSTER_DIR=$LAB_STATE/cluster
LAB_CLUSTER_VHOSTS=(celery quorum steady)
# vhost steady: a quorum queue `steady` bound to xpublic (#), bounded (the oldest dropped), for
# a steady publisher (tests/lab/publish --vhost steady --until-stopped --per-second F)
LAB_STEADY_VHOST=steady
LAB_STEADY_QUEUE=steady
LAB_STEADY_MAX_LENGTH=100000
# Cheap nodes on a 2-core machine: one scheduler each, no busy waiting.
LAB_CLUSTER_ERL_ARGS="+S 1:1 +SDcpu 1:1 +SDio 4 +sbwt none +sbwtdcpu none +sbwtdio none"

cluster_index() { # c2 | 2 -> 2
  local n=${1#c}
  [[ $n =~ ^[123]$ ]] || die "no cluster node '$1' (c1, c2 or c3)"
  printf '%s' "$n"
}
cluster_node() { printf '%s' "${LAB_CLUSTER_NODES[$1 - 1]}"; }
cluster_amqp_port() { printf '%s' "${LAB_CLUSTER_AMQP_PORTS[$1 - 1]}"; }
cluster_mgmt_url() { printf 'http://127.0.0.1:%s' "${LAB_CLUSTER_MGMT_PORTS[$1 - 1]}"; }
# rabbitmqctl against one node (the Debian wrapper runs it as rabbitmq: same cookie)
cluster_ctl() { local i=$1; shift; timeout 70 rabbitmqctl -q -n "$(cluster_node "$i")" "$@"; }

# The node's management API answers as roll-lab (an administrator): the node is up.
cluster_api_ok() {
  LAB_MGMT=$(cluster_mgmt_url "$1") mgmt GET /api/whoami
  [[ $MGMT_CODE == 200 && $(mgmt_body) == *administrator* ]]
}
# The node's Erlang VM runs (whether rabbit is started or not).
cluster_beam_pid() { # (its pid file, checked: a stale file may name another process)
  local pid
  pid=$(cat "$LAB_CLUSTER_DIR/c$1/pid" 2>/dev/null) || return 0
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "RABBITMQ_NODENAME=$(cluster_node "$1")" \
    && printf '%s' "$pid"
  return 0
}
cluster_beam_alive() { [[ -n $(cluster_beam_pid "$1") ]]; }

# Names of the nodes node i's API says are running members, one a line.
cluster_running_members() {
  LAB_MGMT=$(cluster_mgmt_url "$1") mgmt GET "/api/nodes?columns=name,running"
  [[ $MGMT_CODE == 200 ]] || return 1
  "$SYS_PYTHON" -c 'import json,sys
for n in json.load(sys.stdin):
    if n.get("running"): print(n["name"])' <"$MGMT_BODY"
}

# Write node i's config files (rewritten only when they differ).
cluster_node_files() {
  local i=$1 d=$LAB_CLUSTER_DIR/c$1 tmp
  install -d -m 0755 "$LAB_CLUSTER_DIR"
  install -d -m 0750 -o rabbitmq -g rabbitmq "$d" "$d/mnesia"
  tmp=$(mktemp)
  cat >"$tmp" <<CONF
# roll lab cluster node $(cluster_node "$i") (tests/lab/common.sh)
listeners.tcp.default = $(cluster_amqp_port "$i")
management.tcp.port = ${LAB_CLUSTER_MGMT_PORTS[$i - 1]}
CONF
  cmp -s "$tmp" "$d/rabbitmq.conf" || install -m 0644 "$tmp" "$d/rabbitmq.conf"
  printf '[rabbitmq_management].\n' >"$tmp"
  cmp -s "$tmp" "$d/enabled_plugins" || install -m 0644 -o rabbitmq -g rabbitmq "$tmp" "$d/enabled_plugins"
  rm -f "$tmp"
}

# Start node i's VM detached (no wait). Its own files, ports and Erlang arguments.
cluster_node_launch() {
  local i=$1 d=$LAB_CLUSTER_DIR/c$1
  cluster_node_files "$i"
  ( cd /var/lib/rabbitmq && ulimit -n "$(ulimit -Hn)" 2>/dev/null
    # The node must not inherit our open files (a caller's `flock` on a lock file would be
    # held by the node for its whole life).
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && eval "exec $fd>&-" 2>/dev/null
    done
    runuser -u rabbitmq -- env -i HOME=/var/lib/rabbitmq LANG=C.UTF-8 \
      PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
      RABBITMQ_NODENAME="$(cluster_node "$i")" \
      RABBITMQ_NODE_PORT="$(cluster_amqp_port "$i")" \
      RABBITMQ_DIST_PORT="${LAB_CLUSTER_DIST_PORTS[$i - 1]}" \
      RABBITMQ_MNESIA_BASE="$d/mnesia" \
      RABBITMQ_LOG_BASE=/var/log/rabbitmq \
      RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
      RABBITMQ_ADVANCED_CONFIG_FILE="$d/advanced.config" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
      RABBITMQ_PID_FILE="$d/pid" \
      RABBITMQ_CONF_ENV_FILE="$d/rabbitmq-env.conf" \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="$LAB_CLUSTER_ERL_ARGS" \
      setsid /usr/lib/rabbitmq/bin/rabbitmq-server -detached \
      </dev/null >>"$d/launch.log" 2>&1 )
}

# Wait (bounded) until node i's rabbit application runs. A node whose VM runs but whose
# application was stopped (rabbitmqctl stop_app: a fault test) has it started again.
cluster_node_await() {
  local i=$1 limit=${2:-180} deadline state
  deadline=$((SECONDS + limit))
  while :; do
    state=$(cluster_ctl "$i" --timeout 15 eval 'rabbit_boot_state:get().' 2>/dev/null) || state=
    case $state in
      ready) return 0 ;;
      stopped)
        say "cluster: $(cluster_node "$i")'s application is stopped: starting it"
        cluster_ctl "$i" --timeout 60 start_app >/dev/null 2>&1 || true ;;
    esac
    if ((SECONDS >= deadline)); then
      warn "$(cluster_node "$i") did not start within $limit s (state: ${state:-no answer}); its log ends with:"
      tail -n 15 "/var/log/rabbitmq/$(cluster_node "$i").log" >&2 2>/dev/null
      return 1
    fi
    sleep 1
  done
}

# Wait (bounded) until node i is a running member as seen by itself and by every other node
# whose API answers, and its management API answers.
cluster_node_await_joined() {
  local i=$1 limit=${2:-120} deadline j me ok
  me=$(cluster_node "$i")
  deadline=$((SECONDS + limit))
  while :; do
    ok=0
    if cluster_api_ok "$i"; then
      ok=1
      for j in 1 2 3; do
        if ((j == i)) || cluster_api_ok "$j"; then
          grep -qx "$me" < <(cluster_running_members "$j" 2>/dev/null) || ok=0
        fi
      done
    fi
    ((ok)) && return 0
    ((SECONDS < deadline)) || { warn "$me not seen running by the cluster within $limit s"; return 1; }
    sleep 1
  done
}

# Stop node i (its whole VM) and wait until its process is gone.
cluster_node_stop() {
  local i=$1 pid
  pid=$(cluster_beam_pid "$i")
  [[ -n $pid ]] || return 0
  cluster_ctl "$i" --timeout 60 shutdown >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
  for _ in $(seq 300); do [[ -d /proc/$pid ]] || return 0; sleep 0.2; done
  warn "$(cluster_node "$i") (pid $pid) still runs after 60 s: killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

# Start node i if it is not running, wait until it rejoined and its API answers.
cluster_node_start() {
  local i=$1
  if ! cluster_beam_alive "$i"; then cluster_node_launch "$i"; fi
  cluster_node_await "$i" && cluster_node_await_joined "$i"
}

# ------------------------------------------------ where a group's services connect
is_cluster_vhost() { [[ " ${LAB_CLUSTER_VHOSTS[*]} " == *" $1 "* ]]; }
is_shared_vhost() { [[ " ${LAB_SHARED_VHOSTS[*]} " == *" $1 "* ]]; }
shared_queue_of() { printf 'q_roll-lab.subscribe.cluster.%s' "$1"; }   # vhost -> its shared queue
# host vhost -> the AMQP port its services use: the single node's, or on the cluster c2 for an
# odd host number and c3 for an even one (each half has both; never c1, which roll uses first).
host_amqp_port() {
  local n
  if is_cluster_vhost "$2"; then
    n=${1//[!0-9]/}
    if ((10#${n:-0} % 2)); then cluster_amqp_port 2; else cluster_amqp_port 3; fi
  else
    printf '5672'
  fi
}
# vhost -> the management API that shows its queues (the single node, or the cluster's c1)
vhost_mgmt_url() { if is_cluster_vhost "$1"; then cluster_mgmt_url 1; else printf '%s' "$LAB_MGMT"; fi; }
