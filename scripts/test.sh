#!/usr/bin/env bash
# The one command that runs the whole tcf test suite, on a fresh Debian 12
# machine with Rust installed (as root or with sudo):
#
#   bash scripts/test.sh
#
# Steps (each fails fast with a message naming it):
#   1. installs missing system packages: tarantool, etcd-server,
#      protobuf-compiler, haproxy, chromium (the console test), prometheus
#      (promtool and the live alert test), and nodejs + npm when `node` is
#      missing (apt-get update, then apt-get install -y); then the console
#      test's playwright-core (npm ci in tests/console; no browser download);
#   2. guard: aws-lc-rs must not be in the dependency tree (ring only);
#   3. cargo fmt --check, cargo clippy -D warnings, cargo build;
#   4. cargo nextest run (profile `ci` when CI=true, else `default`);
#      installs cargo-nextest if it is missing;
#   5. cargo test --doc.
# It ends with the nextest summary line, a `summary: N passed, N failed,
# N skipped` line and, when tests skipped, `skipped: N` with one line per
# skip naming the test and why (tcf_tests::skip records them in
# $TCF_SKIP_DIR; nextest itself counts a skipped test as passed).
#
# The Tarantool binary: TCF_TARANTOOL (default `tarantool` on PATH, Debian's
# package); TCF_TARANTOOL_SOURCE / TCF_TARANTOOL_TARGET give the source
# (cluster A) and target (cluster B) sides of the federation tests their own
# (README.md, Development).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }
die() {
    printf '\ntest.sh: FAILED: %s\n' "$*" >&2
    exit 1
}

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust first (rustup)"

# ---- 1. system packages ------------------------------------------------------
step "system packages"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install packages"
    SUDO="sudo"
fi
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
missing=()
for pkg in tarantool etcd-server protobuf-compiler haproxy chromium prometheus; do
    installed "$pkg" || missing+=("$pkg")
done
# The machine's own Node.js (20 or later, which playwright-core needs) is used
# when there is one; Debian's otherwise.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}"
    $SUDO apt-get update || die "apt-get update"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y "${missing[@]}" \
        || die "apt-get install ${missing[*]}"
    # The prometheus package starts a system Prometheus (and its node
    # exporter) where systemd runs; the tests run their own on free ports.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
        for unit in prometheus prometheus-node-exporter; do
            if systemctl is-active --quiet "$unit" 2>/dev/null; then
                $SUDO systemctl disable --now "$unit" || die "systemctl disable --now $unit"
            fi
        done
    fi
else
    echo "all present"
fi
for cmd in chromium promtool prometheus node npm; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd is not on PATH after install"
done
if [ ! -d tests/console/node_modules/playwright-core ]; then
    echo "installing playwright-core for the console test (npm ci in tests/console)"
    npm ci --prefix tests/console --no-audit --no-fund || die "npm ci --prefix tests/console"
fi
command -v tarantool >/dev/null 2>&1 || die "tarantool is not on PATH after install"
command -v etcd >/dev/null 2>&1 || die "etcd is not on PATH after install"
# (sed, not head: with pipefail an early-closing reader would fail the pipe)
for var in TCF_TARANTOOL TCF_TARANTOOL_SOURCE TCF_TARANTOOL_TARGET; do
    bin=${!var:-}
    [ -n "$bin" ] || continue
    command -v "$bin" >/dev/null 2>&1 || die "$var=$bin is not an executable"
    echo "$var=$bin: $("$bin" --version 2>&1 | sed -n 1p)"
done
tarantool --version 2>&1 | sed -n 1p
etcd --version 2>&1 | sed -n 1p

# ---- 2. crypto provider guard -----------------------------------------------
step "guard: no aws-lc-rs in the dependency tree"
if tree_out=$(cargo tree -i aws-lc-rs --workspace --target all 2>&1); then
    echo "$tree_out"
    die "aws-lc-rs is in the dependency tree (use ring: see the workspace Cargo.toml)"
elif grep -q "did not match any packages" <<<"$tree_out"; then
    echo "ok: aws-lc-rs not found"
else
    echo "$tree_out"
    die "cargo tree failed"
fi

# ---- 3. format, lint, build -----------------------------------------------------
step "cargo fmt --check"
cargo fmt --all --check || die "formatting (run: cargo fmt --all)"

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings || die "clippy"

step "cargo build"
cargo build --workspace --all-targets || die "build"

# ---- 4. tests -------------------------------------------------------------------
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest || die "cargo install cargo-nextest"
fi
profile=default
if [ "${CI:-}" = "true" ]; then
    profile=ci
fi
step "cargo nextest run --workspace --profile $profile"
nextest_log=$(mktemp)
TCF_SKIP_DIR=$(mktemp -d)
export TCF_SKIP_DIR
trap 'rm -rf "$nextest_log" "$TCF_SKIP_DIR"' EXIT
set +e
cargo nextest run --workspace --profile "$profile" 2>&1 | tee "$nextest_log"
nextest_rc=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^ *Summary \[' "$nextest_log" | tail -n 1 || true)
# A test that skipped (tcf_tests::skip) passed for nextest: it is counted
# here as skipped, not passed, and each one is listed with its reason.
skips=()
for f in "$TCF_SKIP_DIR"/*.skip; do
    [ -e "$f" ] || continue
    skips+=("$(cat "$f")")
done
skipped=${#skips[@]}
print_skips() {
    if [ "$skipped" -gt 0 ]; then
        echo "skipped: $skipped"
        printf '  %s\n' "${skips[@]}"
    fi
}
if [ "$nextest_rc" -ne 0 ]; then
    print_skips
    die "nextest (exit $nextest_rc): ${summary:-no summary line}"
fi

step "cargo test --doc --workspace"
doc_log=$(mktemp)
trap 'rm -rf "$nextest_log" "$doc_log" "$TCF_SKIP_DIR"' EXIT
set +e
cargo test --doc --workspace 2>&1 | tee "$doc_log"
doc_rc=${PIPESTATUS[0]}
set -e
[ "$doc_rc" -eq 0 ] || die "doc tests (exit $doc_rc)"

# ---- summary --------------------------------------------------------------------
count() { grep -oE "[0-9]+ $1" | awk '{s += $1} END {print s + 0}'; }
passed=$(( $(count passed <<<"$summary") + $(grep '^test result:' "$doc_log" | count passed) - skipped ))
failed=$(( $(count failed <<<"$summary") + $(grep '^test result:' "$doc_log" | count failed) ))
echo
echo "nextest: $(sed 's/^ *//' <<<"$summary")"
echo "summary: $passed passed, $failed failed, $skipped skipped"
print_skips
