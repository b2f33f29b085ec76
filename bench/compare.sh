#!/usr/bin/env bash
# Runs Macula's benchmarks round-robin with the peers' (NATS, Zenoh, raw quinn) in one sitting
# and prints the table of medians. Needs the peers' harness; not part of CI (release builds,
# minutes of machine time).
#
#   bench/compare.sh PEERS_DIR [RUNS]        # e.g. bench/compare.sh ../peers 3
#   ONLY="zenoh macula" bench/compare.sh PEERS_DIR 3
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS=${1:?usage: bench/compare.sh PEERS_DIR [RUNS]}
RUNS=${2:-3}
cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" -p macula-tokio --bin macula
LIST=$(mktemp)
trap 'rm -f "$LIST"' EXIT
sed "s|@MACULA@|$ROOT/target/release/macula|g" "$ROOT/bench/macula.benches.in" > "$LIST"
EXTRA=$LIST ONLY=${ONLY:-"nats zenoh quinn macula"} RUNS=$RUNS "$PEERS/run_all.sh"
