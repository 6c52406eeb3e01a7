#!/usr/bin/env bash
# The tcf federation demo, on one machine (a fresh Debian 12 with Rust
# installed; as root or with sudo):
#
#   bash examples/demo.sh                    # runs until Ctrl-C
#   DEMO_DURATION=20 bash examples/demo.sh   # the live phase lasts 20 s, then it stops by itself
#
# What it does (docs/demo.md has the details):
#   1. installs missing system packages (tarantool unless TCF_TARANTOOL is
#      set, etcd-server, protobuf-compiler, haproxy, curl, jq): apt-get
#      update, apt-get install;
#   2. cargo build --release --bins;
#   3. generates the dev certificates into certs/dev if they are missing;
#   4. checks that every port it needs is free;
#   5. starts clusters A and B (2 replicasets x master + replica each:
#      8 tarantool processes), seeds A, starts etcd (127.0.0.1:2379), then
#      tcf-gateway + tcf-destination for A -> B (initial load of A into B)
#      and for B -> A (initial_position: current);
#   6. starts one tcf-worker per cluster (A active, B passive; one_way: the
#      workers stop the B -> A pair while A is active and fence the user
#      `app` on B) and HAProxy (examples/haproxy.cfg: one frontend per
#      replicaset, 127.0.0.1:3300 and :3310, health-checking the workers'
#      GET /tcf/is_active);
#   7. writes a few thousand rows through HAProxy as user `app` (they land
#      on A) and shows them arriving on B, with the destination's applied
#      vclock and lag;
#   8. switches over with tcfctl (its dry run first, then `tcfctl switchover`:
#      POST /tcf/switchover on A's worker; A fenced, A -> B
#      drained, B -> A started, B active), shows both workers'
#      /tcf/is_active and HAProxy moving to B, then writes as many rows
#      through HAProxy again: they land on B and flow B -> A;
#   9. keeps writing a trickle through HAProxy (to B) every second, one
#      status line a second, until Ctrl-C or DEMO_DURATION seconds; then
#      checks that A equals B (row counts, sums and a CRC of every tuple,
#      then `tcfctl verify`: tcf's own online row-by-row comparison),
#      stops everything by PID and prints where the logs are.
#
# Environment:
#   DEMO_DURATION=N   length of the live phase in seconds (default 0: until Ctrl-C)
#   DEMO_RUN_DIR=DIR  where processes keep data and logs (default: a new
#                     /tmp/tcf-demo.XXXXXX); must be empty or absent
#   DEMO_KEEP_DATA=1  keep the data files after a successful run (they are
#                     always kept after a failure; logs are always kept)
#   DEMO_ROWS=N       accounts written in each bulk write (before and after the
#                     switchover), with as many events (default 4000)
#   TCF_TARANTOOL=BIN the tarantool binary of both clusters and the client (a
#                     path or a name on PATH; default `tarantool`, Debian's
#                     2.6 package, which step 1 installs when missing). Any of
#                     2.6, 2.11 and 3.x (e.g. /opt/tarantool/3.3.0/bin/tarantool)
#   RUST_LOG          log filter of the tcf binaries (default info)
#
# Exit status: 0 when the switchover succeeded and A equals B at the end, 1
# on any failure (with the reason and the failing process's log tail), 130 on
# a Ctrl-C before the live phase.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DEMO_DURATION:-0}
BULK_ROWS=${DEMO_ROWS:-4000}
SEED_ROWS=1000
[[ "$DURATION" =~ ^[0-9]+$ ]] || { echo "demo: DEMO_DURATION must be a number of seconds, not '$DURATION'" >&2; exit 1; }
[[ "$BULK_ROWS" =~ ^[0-9]+$ ]] || { echo "demo: DEMO_ROWS must be a number, not '$BULK_ROWS'" >&2; exit 1; }

INFO_TOKEN=$(tr -d '[:space:]' < examples/secrets/info.token)
LUA_DIR=examples/tarantool
TARANTOOL=${TCF_TARANTOOL:-tarantool}
CLIENT=("$TARANTOOL" "$LUA_DIR/client.lua")

# Clusters: name replicaset role port (master first in each replicaset).
INSTANCES=(
    "A rs1 master 3301" "A rs1 replica 3302" "A rs2 master 3311" "A rs2 replica 3312"
    "B rs1 master 3401" "B rs1 replica 3402" "B rs2 master 3411" "B rs2 replica 3412"
)
A_MASTERS=127.0.0.1:3301,127.0.0.1:3311
# The application's addresses: HAProxy's frontends of rs1 and rs2
# (examples/haproxy.cfg), routing to the active cluster's masters.
LB=127.0.0.1:3300,127.0.0.1:3310
ETCD_CLIENT=2379
ETCD_PEER=2380
WORKER_A=10083
WORKER_B=10183
HAPROXY_STATS=10090
# name port
TCF_PORTS=(
    "gateway a-to-b gRPC:10080" "gateway a-to-b HTTP:10081" "destination a-to-b HTTP:10082"
    "gateway b-to-a gRPC:10180" "gateway b-to-a HTTP:10181" "destination b-to-a HTTP:10182"
    "worker A HTTP:$WORKER_A" "worker B HTTP:$WORKER_B"
    "haproxy frontend rs1:3300" "haproxy frontend rs2:3310" "haproxy stats:$HAPROXY_STATS"
)

# ---- output helpers ------------------------------------------------------------
step() { printf '\n==> %s\n' "$*"; }
say() { printf '    %s\n' "$*"; }
die() {
    printf '\ndemo: FAILED: %s\n' "$*" >&2
    exit 1
}

# ---- process bookkeeping ----------------------------------------------------------
RUN=""
PIDS=()                 # in start order
declare -A NAME_OF=()   # pid -> name
declare -A LOG_OF=()    # pid -> log file
WATCHER=""
PHASE=setup
STOP=0
FAILED=1

# True while `pid` runs (a zombie child does not count).
alive() {
    local pid=$1 state
    [ -r "/proc/$pid/stat" ] || return 1
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

log_tail() {
    local pid=$1
    printf -- '--- last lines of %s (%s) ---\n' "${NAME_OF[$pid]}" "${LOG_OF[$pid]}" >&2
    tail -n 25 "${LOG_OF[$pid]}" >&2 2>/dev/null || true
    printf -- '---\n' >&2
}

# start NAME DIR LOGFILE CMD...: runs CMD in its own session (a Ctrl-C in the
# terminal reaches only this script, which stops everything in order), stdin
# closed, stdout and stderr to DIR/LOGFILE; the current directory stays the
# repository root (the example configs use paths relative to it).
START_PID=""
start() {
    local name=$1 dir=$2 log=$3
    shift 3
    mkdir -p "$dir"
    setsid "$@" </dev/null >"$dir/$log" 2>&1 &
    START_PID=$!
    PIDS+=("$START_PID")
    NAME_OF[$START_PID]=$name
    LOG_OF[$START_PID]=$dir/$log
    echo "$START_PID $name" >>"$RUN/pids"
    alive "$START_PID" || { log_tail "$START_PID"; die "$name did not start"; }
}

# wait_for DESCRIPTION TIMEOUT PID CMD...: polls CMD every 0.2 s until it
# succeeds; fails at once if PID exits, or after TIMEOUT seconds.
wait_for() {
    local what=$1 timeout=$2 pid=$3
    shift 3
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        if [ -n "$pid" ] && ! alive "$pid"; then
            log_tail "$pid"
            die "$what: ${NAME_OF[$pid]} exited"
        fi
        if ((SECONDS >= deadline)); then
            [ -n "$pid" ] && log_tail "$pid"
            echo "last attempt:" >&2
            "$@" >&2 || true
            die "$what: not ready after ${timeout}s"
        fi
        sleep 0.2
    done
}

# Every started process must still run.
check_alive() {
    local pid
    for pid in "${PIDS[@]}"; do
        if ! alive "$pid"; then
            log_tail "$pid"
            die "${NAME_OF[$pid]} (pid $pid) exited unexpectedly"
        fi
    done
}

# SIGTERM to each pid given, then SIGKILL after 15 s; reaps them.
stop_pids() {
    local pid deadline
    for pid in "$@"; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
    deadline=$((SECONDS + 15))
    for pid in "$@"; do
        while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
        if alive "$pid"; then
            echo "demo: ${NAME_OF[$pid]} (pid $pid) ignored SIGTERM: SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if [ "${#PIDS[@]}" -gt 0 ]; then
        step "stopping ${#PIDS[@]} processes by PID: HAProxy, workers, destinations, gateways, etcd, clusters"
        local lb=() wrk=() dst=() gw=() tnt=() other=() pid
        for pid in "${PIDS[@]}"; do
            case "${NAME_OF[$pid]}" in
                haproxy*) lb+=("$pid") ;;
                tcf-worker*) wrk+=("$pid") ;;
                tcf-destination*) dst+=("$pid") ;;
                tcf-gateway*) gw+=("$pid") ;;
                tarantool*) tnt+=("$pid") ;;
                *) other+=("$pid") ;;
            esac
        done
        # HAProxy and the workers first (a worker outliving the replicators
        # or etcd would log failed commands), then destinations (a gateway
        # going away first would make them log a reconnect), then gateways,
        # etcd, the clusters.
        [ "${#lb[@]}" -gt 0 ] && stop_pids "${lb[@]}"
        [ "${#wrk[@]}" -gt 0 ] && stop_pids "${wrk[@]}"
        [ "${#dst[@]}" -gt 0 ] && stop_pids "${dst[@]}"
        [ "${#gw[@]}" -gt 0 ] && stop_pids "${gw[@]}"
        [ "${#other[@]}" -gt 0 ] && stop_pids "${other[@]}"
        [ "${#tnt[@]}" -gt 0 ] && stop_pids "${tnt[@]}"
        local left=0
        for pid in "${PIDS[@]}"; do alive "$pid" && left=$((left + 1)); done
        if [ "$left" -eq 0 ]; then say "all stopped"; else say "$left processes still run!"; fi
    fi
    # Last: until here, the watcher stands by in case this script is killed.
    if [ -n "$WATCHER" ]; then
        kill "$WATCHER" 2>/dev/null
        wait "$WATCHER" 2>/dev/null
    fi
    if [ -n "$RUN" ] && [ -d "$RUN" ]; then
        rm -f "$RUN/pids"
        if [ "$rc" -eq 0 ] && [ "$FAILED" -eq 0 ] && [ "${DEMO_KEEP_DATA:-0}" != 1 ]; then
            # Data files go, logs stay.
            find "$RUN" -type f ! -name '*.log' -delete 2>/dev/null
            find "$RUN" -mindepth 1 -type d -empty -delete 2>/dev/null
            echo "logs: $RUN (data files removed; DEMO_KEEP_DATA=1 keeps them)"
        else
            echo "logs and data: $RUN"
        fi
        echo "  tarantool: $RUN/{a,b}-rs{1,2}-{master,replica}/tarantool.log"
        echo "  tcf:       $RUN/{gateway,destination}-{a-to-b,b-to-a}/output.log, $RUN/worker-{a,b}/output.log"
        echo "  haproxy:   $RUN/haproxy/haproxy.log"
        echo "  etcd:      $RUN/etcd/etcd.log"
    fi
    exit "$rc"
}

on_interrupt() {
    if [ "$PHASE" = live ] && [ "$STOP" -eq 0 ]; then
        STOP=1
        printf '\n    Ctrl-C: finishing (Ctrl-C again to stop at once)\n'
    else
        exit 130
    fi
}

trap cleanup EXIT
trap on_interrupt INT
trap 'exit 143' TERM
trap 'exit 129' HUP
# A closed output (e.g. `| tee` killed by the same Ctrl-C) must not kill
# this script before it has stopped its processes: a failed write is an
# error (set -e), which runs the cleanup.
trap '' PIPE

# ---- 1. system packages ---------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first (https://rustup.rs)"

step "system packages"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages"
    SUDO="sudo"
fi
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
packages=(etcd-server protobuf-compiler haproxy curl jq)
# Debian's tarantool only when no other binary is chosen.
[ -n "${TCF_TARANTOOL:-}" ] || packages+=(tarantool)
for pkg in "${packages[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing: ${missing[*]}"
    $SUDO apt-get update || die "apt-get update"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}" \
        || die "apt-get install ${missing[*]}"
    # Debian's etcd-server starts a system etcd on 127.0.0.1:2379 at install
    # time; the demo runs its own there. Only the service this run installed
    # is stopped.
    if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1 \
        && systemctl is-active --quiet etcd 2>/dev/null; then
        say "stopping and disabling the etcd service the package just started (the demo runs its own)"
        $SUDO systemctl disable --now etcd || die "systemctl disable --now etcd"
    fi
else
    say "all present"
fi
for cmd in etcd curl jq setsid flock; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not on PATH"
done
command -v "$TARANTOOL" >/dev/null 2>&1 \
    || die "tarantool binary '$TARANTOOL' (TCF_TARANTOOL) is neither an executable path nor on PATH"
# Debian installs haproxy in /usr/sbin, which a normal user's PATH may lack.
HAPROXY_BIN=$(command -v haproxy 2>/dev/null || echo /usr/sbin/haproxy)
[ -x "$HAPROXY_BIN" ] || die "haproxy is neither on PATH nor in /usr/sbin"
say "$("$TARANTOOL" --version 2>&1 | sed -n 1p) ($TARANTOOL); $(etcd --version 2>&1 | sed -n 1p); $("$HAPROXY_BIN" -v 2>&1 | sed -n 1p)"

# ---- 2. build -----------------------------------------------------------------------------
step "cargo build --release --bins"
cargo build --release --bins || die "cargo build --release --bins"
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
GATEWAY_BIN=$TARGET_DIR/release/tcf-gateway
DESTINATION_BIN=$TARGET_DIR/release/tcf-destination
WORKER_BIN=$TARGET_DIR/release/tcf-worker
TCFCTL_BIN=$TARGET_DIR/release/tcfctl
for b in "$GATEWAY_BIN" "$DESTINATION_BIN" "$WORKER_BIN" "$TCFCTL_BIN"; do
    [ -x "$b" ] || die "$b was not built"
done

# ---- 3. certificates ---------------------------------------------------------------------
step "dev certificates (certs/dev)"
if [ ! -f certs/dev/ca.pem ]; then
    cargo run --release -q -p tcf-common --features devcerts --bin tcf-certs -- --out certs/dev \
        || die "generating certificates (tcf-certs)"
else
    say "present (delete certs/dev to regenerate)"
fi
for f in ca gateway gateway-key destination destination-key; do
    [ -f "certs/dev/$f.pem" ] || die "certs/dev/$f.pem is missing: regenerate with
    cargo run -p tcf-common --features devcerts --bin tcf-certs -- --out certs/dev --force"
done

# ---- 4. ports ------------------------------------------------------------------------------
step "ports"
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Ports the test harness may hand out (tests/src/ports.rs) are locked for the
# demo's lifetime, as the harness does, so a concurrent test cannot take them.
lock_port() {
    local port=$1 fd lock=/tmp/tcf-ports/$1.lock
    mkdir -p /tmp/tcf-ports 2>/dev/null && [ -w /tmp/tcf-ports ] || return 0
    [ ! -e "$lock" ] || [ -w "$lock" ] || return 0
    exec {fd}>>"$lock" || return 0
    flock -n "$fd" || die "port $port is reserved by a running tcf test ($lock): retry when it ends"
}
check_port() {
    local port=$1 what=$2 hint=""
    if listening "$port"; then
        if [ "$port" = "$ETCD_CLIENT" ] && command -v systemctl >/dev/null 2>&1 \
            && systemctl is-active --quiet etcd 2>/dev/null; then
            hint=" (the system etcd service: stop it with '${SUDO:+sudo }systemctl stop etcd')"
        elif command -v ss >/dev/null 2>&1; then
            hint=$(ss -Hltnp "sport = :$port" 2>/dev/null | sed -n 1p | tr -s ' ')
            [ -n "$hint" ] && hint=" ($hint)"
        fi
        die "port $port ($what) is already in use on 127.0.0.1$hint: stop what listens there (a previous demo?)"
    fi
    ((port >= 10000)) && lock_port "$port"
    return 0
}
for i in "${INSTANCES[@]}"; do
    read -r c rs role port <<<"$i"
    check_port "$port" "cluster $c $rs $role"
done
check_port "$ETCD_CLIENT" "etcd client"
check_port "$ETCD_PEER" "etcd peer"
for p in "${TCF_PORTS[@]}"; do
    check_port "${p##*:}" "${p%:*}"
done
say "free: 3301 3302 3311 3312 3401 3402 3411 3412 2379 2380 10080-10083 10180-10183 3300 3310 $HAPROXY_STATS"

# ---- 5. run directory, watchdog --------------------------------------------------------------
if [ -n "${DEMO_RUN_DIR:-}" ]; then
    RUN=$DEMO_RUN_DIR
    mkdir -p "$RUN"
    [ -z "$(ls -A "$RUN")" ] || { RUN=""; die "DEMO_RUN_DIR=$DEMO_RUN_DIR is not empty"; }
    RUN=$(cd "$RUN" && pwd)
else
    RUN=$(mktemp -d "${TMPDIR:-/tmp}/tcf-demo.XXXXXX")
fi
: >"$RUN/pids"
step "run directory: $RUN"
# If this script is killed outright (SIGKILL: no trap runs), a detached
# watcher stops what it started. Tarantool instances also exit by themselves
# when their parent is gone (TCF_PARENT_PID).
# shellcheck disable=SC2016 # expanded by the watcher's own shell
setsid bash -c '
    while kill -0 "$1" 2>/dev/null; do sleep 1; done
    [ -f "$2" ] || exit 0
    while read -r pid _; do kill -TERM "$pid" 2>/dev/null; done <"$2"
    sleep 10
    while read -r pid _; do kill -KILL "$pid" 2>/dev/null; done <"$2"
' demo-watcher "$$" "$RUN/pids" </dev/null >/dev/null 2>&1 &
WATCHER=$!

# ---- 6. clusters A and B ------------------------------------------------------------------
step "clusters A and B: 2 replicasets x (master + replica) each"
declare -A PID_OF=()
start_instances() {
    local want=$1 i c rs role port name dir master
    for i in "${INSTANCES[@]}"; do
        read -r c rs role port <<<"$i"
        [ "$role" = "$want" ] || continue
        name="${c,,}-$rs-$role"
        dir="$RUN/$name"
        master=""
        [ "$role" = replica ] && master="127.0.0.1:$((port - 1))"
        start "tarantool $name" "$dir" tarantool.log \
            env TCF_NAME="$name" TCF_PORT="$port" TCF_DIR="$dir" TCF_MASTER="$master" \
            TCF_PARENT_PID="$$" "$TARANTOOL" "$LUA_DIR/$role.lua"
        PID_OF[$name]=$START_PID
    done
    for i in "${INSTANCES[@]}"; do
        read -r c rs role port <<<"$i"
        [ "$role" = "$want" ] || continue
        name="${c,,}-$rs-$role"
        wait_for "tarantool $name on 127.0.0.1:$port" 60 "${PID_OF[$name]}" \
            "${CLIENT[@]}" health "127.0.0.1:$port" "$role"
        say "$(printf '%-16s 127.0.0.1:%s  pid %-7s %s' "$name" "$port" "${PID_OF[$name]}" "$RUN/$name")"
    done
}
start_instances master
start_instances replica

step "seeding A with $SEED_ROWS accounts + $SEED_ROWS events (B starts empty: tcf loads them)"
out=$("${CLIENT[@]}" write "$A_MASTERS" 1 "$SEED_ROWS" 1) || die "seeding A: $out"
while read -r line; do say "$line"; done <<<"$out"
NEXT_ACCOUNT=$((SEED_ROWS + 1))
NEXT_EVENT=$((SEED_ROWS + 1))

# ---- 7. etcd --------------------------------------------------------------------------------
step "etcd (single member, 127.0.0.1:$ETCD_CLIENT: the workers keep the federation's state there)"
start etcd "$RUN/etcd" etcd.log \
    etcd --name tcf-demo --data-dir "$RUN/etcd/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
    --initial-cluster "tcf-demo=http://127.0.0.1:$ETCD_PEER" --initial-cluster-state new \
    --initial-cluster-token "tcf-demo-$$" --logger zap --log-outputs stderr
ETCD_PID=$START_PID
etcd_healthy() { curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT/health" | grep -q '"health":"true"'; }
wait_for "etcd /health" 30 "$ETCD_PID" etcd_healthy
say "$(curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_CLIENT/health")  pid $ETCD_PID"

# ---- 8. tcf ---------------------------------------------------------------------------------
step "tcf: gateway + destination for A -> B (initial load) and B -> A (initial_position: current)"
declare -A TCF_PID=()
start_tcf() {
    local kind=$1 pair=$2 port=$3 bin dir
    if [ "$kind" = gateway ]; then bin=$GATEWAY_BIN; else bin=$DESTINATION_BIN; fi
    dir="$RUN/$kind-$pair"
    start "tcf-$kind $pair" "$dir" output.log \
        env -u TCF_REPLICATION_PASSWORD TMPDIR="$dir" RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
        "$bin" --config "examples/$pair.yaml"
    TCF_PID[$kind-$pair]=$START_PID
    wait_for "tcf-$kind $pair on http://127.0.0.1:$port" 30 "$START_PID" \
        curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/metrics"
    say "$(printf 'tcf-%-12s %-7s http://127.0.0.1:%s  pid %-7s %s' "$kind" "$pair" "$port" "$START_PID" "$dir/output.log")"
}
start_tcf gateway a-to-b 10081
start_tcf gateway b-to-a 10181
start_tcf destination a-to-b 10082
start_tcf destination b-to-a 10182

status_json() { curl -fsS --max-time 2 -H "Authorization: Bearer $INFO_TOKEN" "http://127.0.0.1:$1/api/v1/status"; }
all_streaming() {
    status_json "$1" | jq -e '[.replicasets[] | .state] | length > 0 and all(. == "streaming")' >/dev/null
}
show_status() {
    status_json "$1" | jq -r '.destination as $d | .replicasets | to_entries[] |
        "\($d) \(.key): \(.value.state), gateway \(.value.gateway), target \(.value.target_instance), applied \(.value.applied_vclock | tojson), rows applied \(.value.rows_applied)"'
}
# wait_streaming PAIR PORT: until every replicaset of the destination is
# `streaming` (after the initial load for A -> B).
wait_streaming() {
    local pair=$1 port=$2 deadline=$((SECONDS + 90)) pid
    until all_streaming "$port"; do
        for pid in "${TCF_PID[destination-$pair]}" "${TCF_PID[gateway-$pair]}"; do
            if ! alive "$pid"; then
                log_tail "$pid"
                die "${NAME_OF[$pid]} exited"
            fi
        done
        if ((SECONDS >= deadline)); then
            status_json "$port" | jq . >&2 || true
            log_tail "${TCF_PID[gateway-$pair]}"
            log_tail "${TCF_PID[destination-$pair]}"
            die "destination $pair: its replicasets did not reach 'streaming' within 90 s"
        fi
        sleep 0.2
    done
    while read -r line; do say "$line"; done < <(show_status "$port")
}
wait_streaming a-to-b 10082
wait_streaming b-to-a 10182

# ---- 9. stats --------------------------------------------------------------------------------
# stats: "URI accounts_count accounts_sum accounts_crc events_count events_sum events_crc" per master.
declare -A STAT=()
read_stats() {
    local out line uri
    out=$("${CLIENT[@]}" stats 127.0.0.1:3301 127.0.0.1:3311 127.0.0.1:3401 127.0.0.1:3411) || return 1
    while read -r line; do
        uri=${line%% *}
        STAT[$uri]=${line#* }
    done <<<"$out"
}
rs_equal() { [ "${STAT[127.0.0.1:$1]}" = "${STAT[127.0.0.1:$2]}" ]; }
b_equals_a() { read_stats && rs_equal 3301 3401 && rs_equal 3311 3411; }
counts() { # PORT -> "accounts/events"
    local f
    read -r -a f <<<"${STAT[127.0.0.1:$1]}"
    printf '%s/%s' "${f[0]}" "${f[3]}"
}
# dest_line PORT: one line about a destination: per replicaset, state (when
# not streaming), applied vclock, lag in seconds (gateway clock) and in rows.
dest_line() {
    status_json "$1" | jq -r '.replicasets | to_entries | map(
        "\(.key) \(if .value.state == "streaming" then "" else .value.state + " " end)applied \(.value.applied_vclock | tojson) lag \(.value.lag_seconds * 1000 | round / 1000)s/\(.value.lag_lsn)"
    ) | join(", ")' 2>/dev/null || echo "destination status unavailable"
}
# all_state PORT STATE: every replicaset of the destination is in STATE.
all_state() {
    status_json "$1" | jq -e --arg s "$2" '[.replicasets[] | .state] | length > 0 and all(. == $s)' >/dev/null
}
pair_state() { # PORT -> the distinct states of the destination's replicasets
    status_json "$1" | jq -r '[.replicasets[] | .state] | unique | join("/")' 2>/dev/null || echo unavailable
}
now_ms() { echo $((${EPOCHREALTIME//[.,]/} / 1000)); }

step "initial load: B after loading A's snapshot (accounts/events per replicaset)"
wait_for "B to equal A after the initial load" 60 "${TCF_PID[destination-a-to-b]}" b_equals_a
read_stats
say "rs1: A $(counts 3301)  B $(counts 3401)    rs2: A $(counts 3311)  B $(counts 3411)    (equal, tuple CRCs included)"

# ---- 10. workers ------------------------------------------------------------------------------
step "tcf-worker for A (initial_status active) and B (passive), state in etcd, replication one_way"
declare -A WORKER_PID=()
start_worker() {
    local c=$1 port=$2 dir
    dir="$RUN/worker-${c,,}"
    start "tcf-worker $c" "$dir" output.log \
        env -u TCF_ADMIN_PASSWORD RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 \
        "$WORKER_BIN" --config "examples/worker-${c,,}.yaml"
    WORKER_PID[$c]=$START_PID
    wait_for "tcf-worker $c on http://127.0.0.1:$port" 30 "$START_PID" \
        curl -fsS --max-time 2 -o /dev/null "http://127.0.0.1:$port/metrics"
    say "$(printf 'tcf-worker %-8s  http://127.0.0.1:%s  pid %-7s %s' "$c" "$port" "$START_PID" "$dir/output.log")"
}
start_worker A "$WORKER_A"
start_worker B "$WORKER_B"

# is_active PORT -> "CODE BODY" of GET /tcf/is_active (no token: the load
# balancer's check): "200 active", "418 passive", "503 {...}".
is_active() {
    local out
    out=$(curl -sS --max-time 2 -w '\n%{http_code}' "http://127.0.0.1:$1/tcf/is_active" 2>&1) || true
    printf '%s %s' "${out##*$'\n'}" "${out%$'\n'*}"
}
roles_are() { # A_CODE B_CODE
    [[ "$(is_active "$WORKER_A")" == "$1 "* ]] && [[ "$(is_active "$WORKER_B")" == "$2 "* ]]
}
info_json() { curl -fsS --max-time 10 -H "Authorization: Bearer $INFO_TOKEN" "http://127.0.0.1:$1/tcf/api/v1/info"; }
fenced_is() { # PORT true|false: the worker's last applied fence of its cluster
    info_json "$1" | jq -e --argjson f "$2" '.fence != null and .fence.fenced == $f' >/dev/null
}
# tcfctl against both workers (the first that answers), info token unless
# TCF_TOKEN_FILE says otherwise: its output is the demo's status lines.
tcfctl() {
    TCF_TOKEN_FILE=${TCF_TOKEN_FILE:-examples/secrets/info.token} \
        "$TCFCTL_BIN" --worker "http://127.0.0.1:$WORKER_A,http://127.0.0.1:$WORKER_B" "$@"
}
# tcfctl status, indented; the demo fails if it does not answer.
show_tcfctl_status() {
    local out
    out=$(tcfctl status 2>&1) || die "tcfctl status failed: $out"
    say "\$ tcfctl status"
    while IFS= read -r line; do say "  $line"; done <<<"$out"
}
wait_for "A's worker to answer 200 and B's 418 on /tcf/is_active" 30 "${WORKER_PID[B]}" roles_are 200 418
wait_for "A's worker to unfence A" 30 "${WORKER_PID[A]}" fenced_is "$WORKER_A" false
wait_for "B's worker to fence B" 30 "${WORKER_PID[B]}" fenced_is "$WORKER_B" true
# one_way: only the pair leaving the active cluster runs.
wait_for "the workers to stop the pair B -> A" 30 "${WORKER_PID[B]}" all_state 10182 stopped
say "GET /tcf/is_active: A $(is_active "$WORKER_A"), B $(is_active "$WORKER_B")"
show_tcfctl_status

# ---- 11. HAProxy -----------------------------------------------------------------------------
step "HAProxy: rs1 on 127.0.0.1:3300, rs2 on 127.0.0.1:3310, to the masters of the cluster whose worker answers 200"
start haproxy "$RUN/haproxy" haproxy.log "$HAPROXY_BIN" -db -f examples/haproxy.cfg
HAPROXY_PID=$START_PID
# hap_states -> "a-rs1 UP" ... per server, from the stats page (CSV).
hap_states() {
    curl -fsS --max-time 2 "http://127.0.0.1:$HAPROXY_STATS/;csv" | awk -F, '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == "status") col = i; next }
        $2 ~ /^[ab]-rs[0-9]+$/ { print $2, $col }'
}
# hap_routes_to a|b: both servers of that cluster UP, those of the other
# DOWN ("DOWN 1/3" is still down: going up).
hap_routes_to() {
    local s
    s=$(hap_states) || return 1
    [ "$(grep -c "^$1-rs[0-9]* UP$" <<<"$s")" = 2 ] && [ "$(grep -c '^[ab]-rs[0-9]* UP' <<<"$s")" = 2 ]
}
hap_line() { hap_states 2>/dev/null | paste -sd, - | sed 's/,/, /g'; }
wait_for "HAProxy to send rs1 and rs2 to A" 30 "$HAPROXY_PID" hap_routes_to a
say "servers: $(hap_line)    pid $HAPROXY_PID  $RUN/haproxy/haproxy.log"

# ---- 12. rows through HAProxy to A, A -> B ------------------------------------------------------
step "writing $BULK_ROWS accounts + $BULK_ROWS events through HAProxy ($LB) as user 'app' (one transaction per row)"
out=$("${CLIENT[@]}" write "$LB" "$NEXT_ACCOUNT" "$BULK_ROWS" "$NEXT_EVENT") || die "writing through HAProxy: $out"
while read -r line; do say "$line"; done <<<"$out"
[[ "$out" == *"landed on: rs1 a-rs1-master, rs2 a-rs2-master"* ]] || die "the rows did not land on A's masters: $out"
NEXT_ACCOUNT=$((NEXT_ACCOUNT + BULK_ROWS))
NEXT_EVENT=$((NEXT_EVENT + BULK_ROWS))
say "arriving on B: accounts/events per replicaset | destination a-to-b per replicaset: applied vclock, lag seconds/rows"
started=$SECONDS
while :; do
    check_alive
    if read_stats; then
        say "$(printf '%3ss  B rs1 %-9s rs2 %-9s | %s' "$((SECONDS - started))" \
            "$(counts 3401)" "$(counts 3411)" "$(dest_line 10082)")"
        rs_equal 3301 3401 && rs_equal 3311 3411 && break
    fi
    ((SECONDS - started < 60)) || die "B did not catch up with A within 60 s"
    sleep 0.5
done
say "B holds every row of A: rs1 $(counts 3401), rs2 $(counts 3411)"

# ---- 13. switchover ----------------------------------------------------------------------------
step "planned switchover A -> B with tcfctl: its dry run first, then the switch"
say "the workers fence A (user app disabled), wait until A -> B has applied everything up to the fence,"
say "start B -> A, then flip the roles in etcd (docs/worker.md, Planned switchover; docs/tcfctl.md)"
say "\$ TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl switchover --dry-run"
if ! out=$(TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl switchover --dry-run 2>&1); then
    while IFS= read -r line; do say "  $line"; done <<<"$out"
    die "the switchover's dry run refused it (above)"
fi
while IFS= read -r line; do say "  $line"; done <<<"$out"
say "\$ TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl switchover --max-lag 10s --timeout 30s"
if ! out=$(TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl switchover --max-lag 10s --timeout 30s 2>&1); then
    while IFS= read -r line; do say "  $line"; done <<<"$out"
    log_tail "${WORKER_PID[A]}"
    log_tail "${WORKER_PID[B]}"
    info_json "$WORKER_A" | jq . >&2 2>/dev/null || true
    die "the switchover did not complete (above)"
fi
while IFS= read -r line; do say "  $line"; done <<<"$out"
[[ "$out" == *"result: done, term 1,"* ]] || die "tcfctl switchover did not report done at term 1: $out"
switched_ms=$(now_ms)
wait_for "A's worker to answer 418 and B's 200 on /tcf/is_active" 15 "${WORKER_PID[B]}" roles_are 418 200
say "GET /tcf/is_active: A $(is_active "$WORKER_A"), B $(is_active "$WORKER_B")"
wait_for "HAProxy to send rs1 and rs2 to B" 30 "$HAPROXY_PID" hap_routes_to b
say "HAProxy servers: $(hap_line)    (B in $(($(now_ms) - switched_ms)) ms after the switchover's answer)"
wait_for "B's worker to unfence B" 30 "${WORKER_PID[B]}" fenced_is "$WORKER_B" false
wait_for "A's worker to fence A" 30 "${WORKER_PID[A]}" fenced_is "$WORKER_A" true
wait_for "the pair B -> A to stream" 60 "${TCF_PID[destination-b-to-a]}" all_streaming 10182
wait_for "the workers to stop the pair A -> B" 30 "${WORKER_PID[A]}" all_state 10082 stopped
show_tcfctl_status
# The fence: the application can no longer write to A, even bypassing HAProxy.
if out=$("${CLIENT[@]}" write "$A_MASTERS" "$NEXT_ACCOUNT" 1 "$NEXT_EVENT" 2>&1); then
    die "user app could still write to A's masters directly after the switchover: $out"
fi
say "user app straight to A's masters (bypassing HAProxy): refused: ${out#client.lua: }"

# ---- 14. rows through HAProxy to B, B -> A ------------------------------------------------------
step "writing $BULK_ROWS accounts + $BULK_ROWS events through HAProxy again: they land on B and flow B -> A"
out=$("${CLIENT[@]}" write "$LB" "$NEXT_ACCOUNT" "$BULK_ROWS" "$NEXT_EVENT") || die "writing through HAProxy: $out"
while read -r line; do say "$line"; done <<<"$out"
[[ "$out" == *"landed on: rs1 b-rs1-master, rs2 b-rs2-master"* ]] || die "the rows did not land on B's masters: $out"
NEXT_ACCOUNT=$((NEXT_ACCOUNT + BULK_ROWS))
NEXT_EVENT=$((NEXT_EVENT + BULK_ROWS))
say "arriving on A: accounts/events per replicaset | destination b-to-a per replicaset: applied vclock, lag seconds/rows"
started=$SECONDS
while :; do
    check_alive
    if read_stats; then
        say "$(printf '%3ss  A rs1 %-9s rs2 %-9s | %s' "$((SECONDS - started))" \
            "$(counts 3301)" "$(counts 3311)" "$(dest_line 10182)")"
        rs_equal 3301 3401 && rs_equal 3311 3411 && break
    fi
    ((SECONDS - started < 60)) || die "A did not catch up with B within 60 s"
    sleep 0.5
done
say "A holds every row of B: rs1 $(counts 3301), rs2 $(counts 3311)"

# ---- 15. live ---------------------------------------------------------------------------------
if [ "$DURATION" -gt 0 ]; then
    step "live: a trickle of writes through HAProxy (now to B) every second for ${DURATION}s (Ctrl-C stops earlier)"
else
    step "live: a trickle of writes through HAProxy (now to B) every second, until Ctrl-C"
fi
say "each second: 2 new accounts, 10 events, 10 balance updates, 1 upsert, 1 delete, as user app through HAProxy"
say "columns: seconds, requests sent, cluster reached | accounts/events per replicaset on A and B | destination b-to-a"
PHASE=live
tick=0
live_start=$SECONDS
next_us=$((${EPOCHREALTIME//[.,]/} + 1000000))
while [ "$STOP" -eq 0 ]; do
    if [ "$DURATION" -gt 0 ] && ((SECONDS - live_start >= DURATION)); then break; fi
    tick=$((tick + 1))
    check_alive
    if sent=$("${CLIENT[@]}" tick "$LB" "$tick" "$NEXT_ACCOUNT" "$NEXT_EVENT" 2>&1); then
        NEXT_ACCOUNT=$((NEXT_ACCOUNT + 2))
        NEXT_EVENT=$((NEXT_EVENT + 10))
    else
        [ "$STOP" -eq 1 ] && break
        die "writing through HAProxy: $sent"
    fi
    [ "${sent#* }" = B ] || die "the trickle reached cluster '${sent#* }', not B: $sent"
    if read_stats 2>/dev/null; then
        line="A rs1 $(printf '%-9s' "$(counts 3301)") rs2 $(printf '%-9s' "$(counts 3311)") B rs1 $(printf '%-9s' "$(counts 3401)") rs2 $(printf '%-9s' "$(counts 3411)")"
    else
        line="(counts unavailable)"
    fi
    say "$(printf '%3ss %5s | %s | %s' "$((SECONDS - live_start))" "$sent" "$line" "$(dest_line 10182)")"
    now_us=${EPOCHREALTIME//[.,]/}
    if ((next_us > now_us)); then
        d=$((next_us - now_us))
        sleep "$(printf '%d.%06d' $((d / 1000000)) $((d % 1000000)))" || true
    fi
    next_us=$((next_us + 1000000))
    now_us=${EPOCHREALTIME//[.,]/}
    ((next_us > now_us)) || next_us=$((now_us + 1000000))
done
PHASE=final

# ---- 16. final check ------------------------------------------------------------------------
step "final check: A equals B (per replicaset: counts, sums and a CRC of every tuple)"
wait_for "A to catch up with B" 60 "${TCF_PID[destination-b-to-a]}" b_equals_a
read_stats
printf '    %-4s %-8s %10s %12s %12s %10s %12s %12s\n' rs cluster accounts 'sum(balance)' crc events 'sum(amount)' crc
for r in "rs1 3301 3401" "rs2 3311 3411"; do
    read -r rs pa pb <<<"$r"
    read -r -a fa <<<"${STAT[127.0.0.1:$pa]}"
    read -r -a fb <<<"${STAT[127.0.0.1:$pb]}"
    printf '    %-4s %-8s %10s %12s %12s %10s %12s %12s\n' "$rs" A "${fa[@]}"
    printf '    %-4s %-8s %10s %12s %12s %10s %12s %12s\n' "$rs" B "${fb[@]}"
done
while read -r line; do say "$line"; done < <(show_status 10082; show_status 10182)
show_tcfctl_status
# The same proof from tcf itself, online: A (now passive) walked against B
# chunk by chunk through the stream (docs/verify.md). Exit 3: the
# destination does not stream yet; 1: A differs.
say "\$ TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl verify"
started=$SECONDS
while :; do
    rc=0
    out=$(TCF_TOKEN_FILE=examples/secrets/toggle.token tcfctl verify --timeout 120s 2>"$RUN/verify.err") || rc=$?
    [ "$rc" = 3 ] && ((SECONDS - started < 30)) && { sleep 1; continue; }
    [ "$rc" = 0 ] || die "tcfctl verify exited $rc: $out $(cat "$RUN/verify.err")"
    break
done
while IFS= read -r line; do say "  $line"; done <<<"$out"
out=$(tcfctl history 2>&1) || die "tcfctl history failed: $out"
say "\$ tcfctl history"
while IFS= read -r line; do say "  $line"; done <<<"$out"
say "GET /tcf/is_active: A $(is_active "$WORKER_A"), B $(is_active "$WORKER_B")"
# Nothing but the one switchover may have changed the roles (the
# coordinator fails over automatically only when the active cluster fails).
state=$(info_json "$WORKER_B" | jq -c '{term, clusters}' 2>/dev/null) || die "B's worker: no info"
[ "$state" = '{"term":1,"clusters":{"A":"passive","B":"active"}}' ] \
    || die "the federation state changed after the switchover: $state (see the workers' logs)"
say "OK: switched over from A to B; every row written through HAProxy, to A before the switch and to B after it, is on both clusters exactly once (A equals B)"
FAILED=0
