#!/usr/bin/env bash
# The project's one test command (README, .ci/run): on a fresh machine it installs and starts
# the real servers (tansu, ClickHouse, Prometheus, Alertmanager; cached under ~/.cache), runs
# the format check, clippy and every test of the workspace, and stops the servers again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Build artifacts are reused across clones on the same machine (CI runs in a fresh clone).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cxpulse/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

step() { printf '\n==> %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "servers (install is cached)"
scripts/servers.sh install
trap 'scripts/servers.sh stop all >/dev/null 2>&1 || true' EXIT
scripts/servers.sh start kafka clickhouse prometheus alertmanager
eval "$(scripts/servers.sh env)"

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
cargo test --workspace --locked --no-fail-fast

step "done"
