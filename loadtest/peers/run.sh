#!/usr/bin/env bash
# Side by side: the same Sigma rules over the same CloudTrail events through
# trailwatch (`replay`), rsigma (`engine eval` and `engine daemon`) and the
# sigma-rust library, each pinned to one core; then events/s per engine and
# every rule whose matches differ (see compare.py).
#
#   loadtest/peers/run.sh              # 200k generated events, CPU 0
#   EVENTS=1000000 CPU=1 loadtest/peers/run.sh
#   EVENTS_FILE=my.ndjson loadtest/peers/run.sh   # your own NDJSON CloudTrail records
#
# Rule sets: the 57 SigmaHQ AWS rules in ../shared/sigma/rules, and the
# built-in pack (rules/pack; rsigma gets its %placeholders% through a
# value_placeholders pipeline made from rules/pack/placeholders.json;
# sigma-rust has no `expand` and no correlations and runs what it can load).
#
# The peers are built here, never vendored: rsigma 0.23.0 with
# `cargo install --locked` (later versions need a newer rustc; ~10 minutes on
# 2 cores) and a small harness crate for sigma-rust, both under
# target/peers/ (git-ignored; PEERS_DIR to move it). Nothing listens on the
# network: rsigma's daemon API goes to a unix socket.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/loadtest/peers"
PEERS="${PEERS_DIR:-$ROOT/target/peers}"
SHARED="$ROOT/../shared"
EVENTS="${EVENTS:-200000}"
CPU="${CPU:-0}"
OUT="$PEERS/out"
RSIGMA="$PEERS/rsigma/bin/rsigma"
HARNESS="$PEERS/sigma-rust-harness/target/release/sigma-rust-harness"
TW="$ROOT/target/release/trailwatch"
NOW=2026-11-01T00:00:00Z

say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[ -d "$SHARED/sigma/rules" ] || die "needs ../shared next to the repository ($SHARED)"
command -v taskset >/dev/null || die "needs taskset (util-linux)"
command -v python3 >/dev/null || die "needs python3"
mkdir -p "$PEERS" "$OUT"

if [ ! -x "$RSIGMA" ]; then
    say "installing rsigma 0.23.0 into $PEERS/rsigma (about 10 minutes on 2 cores)"
    cargo install rsigma@0.23.0 --locked --root "$PEERS/rsigma"
fi

say "building the sigma-rust harness"
mkdir -p "$PEERS/sigma-rust-harness"
cp "$HERE/sigma-rust-harness/Cargo.toml" "$PEERS/sigma-rust-harness/"
rm -rf "$PEERS/sigma-rust-harness/src" && cp -r "$HERE/sigma-rust-harness/src" "$PEERS/sigma-rust-harness/"
cargo build --release --quiet --manifest-path "$PEERS/sigma-rust-harness/Cargo.toml"

say "building trailwatch (release)"
(cd "$ROOT" && cargo build --release --quiet -p trailwatch-processor --bin trailwatch)

if [ -n "${EVENTS_FILE:-}" ]; then
    INPUT="$(cd "$(dirname "$EVENTS_FILE")" && pwd)/$(basename "$EVENTS_FILE")"
else
    INPUT="$PEERS/cloudtrail-$EVENTS.ndjson"
    if [ ! -s "$INPUT" ]; then
        say "generating $EVENTS CloudTrail records"
        (cd "$ROOT" && TRAILWATCH_BENCH_EVENTS="$EVENTS" TRAILWATCH_BENCH_WRITE="$INPUT" \
            cargo bench --quiet -p trailwatch-processor --bench vs_parse)
    fi
fi
N=$(grep -c . "$INPUT")
export INPUT

# rsigma's placeholders: a pipeline with the pack's defaults.
python3 - "$ROOT/rules/pack/placeholders.json" "$PEERS/pack-placeholders.yml" <<'EOF'
import json, sys
ph = json.load(open(sys.argv[1]))
out = ["name: trailwatch pack placeholders", "priority: 10", "vars:"]
for k, v in ph.items():
    out.append(f"  {k}:")
    out += [f"    - {json.dumps(x)}" for x in v["values"]]
out += ["transformations:", "  - id: placeholders", "    type: value_placeholders"]
open(sys.argv[2], "w").write("\n".join(out) + "\n")
EOF

# timed NAME CMD...: runs pinned to $CPU, stdout to $dir/NAME.out, stderr to
# $dir/NAME.err, wall seconds to $dir/NAME.time.
timed() {
    local name="$1"; shift
    local t0 t1
    t0=$(date +%s.%N)
    taskset -c "$CPU" "$@" > "$dir/$name.out" 2> "$dir/$name.err" || die "$name failed (see $dir/$name.err)"
    t1=$(date +%s.%N)
    python3 -c "print($t1 - $t0)" > "$dir/$name.time"
    echo "  $name: $(cat "$dir/$name.time") s" >&2
}

for set in sigmahq pack; do
    dir="$OUT/$set"
    mkdir -p "$dir"
    rm -f "$dir"/*
    if [ "$set" = sigmahq ]; then
        rules="$SHARED/sigma/rules"
        tw_rules=(--no-builtin --rules "$rules")
        rs_rules=(-r "$rules")
    else
        rules="$ROOT/rules/pack"
        tw_rules=()
        rs_rules=(-r "$rules" -p "$PEERS/pack-placeholders.yml" --no-detections)
    fi
    say "rules: $set, $N events, pinned to CPU $CPU; load: $(uptime | sed 's/.*load average/load average/')"
    timed trailwatch "$TW" replay --no-progress --now "$NOW" "${tw_rules[@]}" "$INPUT"
    timed rsigma-eval "$RSIGMA" engine eval "${rs_rules[@]}" --timestamp-field eventTime \
        --output-format ndjson -e "@$INPUT"
    timed rsigma-daemon sh -c '"$0" engine daemon "$@" < "$INPUT"' "$RSIGMA" "${rs_rules[@]}" \
        --timestamp-field eventTime --api-addr "unix://$dir/rsigma.sock" --input stdin --output stdout
    timed sigma-rust "$HARNESS" "$rules" "$INPUT"
    # Match lists per event, for the rules whose counts differ (not timed).
    "$RSIGMA" engine eval "${rs_rules[@]}" --timestamp-field eventTime --include-event \
        --output-format ndjson -e "@$INPUT" > "$dir/rsigma-events.out" 2> /dev/null
    "$HARNESS" "$rules" "$INPUT" --per-event > /dev/null 2> "$dir/sigma-rust-events.out"
done

say "results"
python3 "$HERE/compare.py" "$OUT" "$N" "$SHARED/sigma/rules" "$ROOT/rules/pack" | tee "$OUT/summary.txt"
echo "(raw outputs and peers.json in $OUT)" >&2
