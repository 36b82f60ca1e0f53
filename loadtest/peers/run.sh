#!/usr/bin/env bash
# Side by side: the same Sigma rules over the same events through trailwatch
# (`replay`), rsigma (`engine eval` and `engine daemon`) and the sigma-rust
# library, each pinned to the same core, one after the other in one run;
# then events/s per engine (per wall second and per CPU second), peak RSS,
# and every rule whose matches differ (compare.py).
#
#   loadtest/peers/run.sh                        # both event sets below, CPU 0
#   SETS=day CPU=1 loadtest/peers/run.sh         # only the realistic day, on CPU 1
#   EVENTS_FILE=my.ndjson [CONFIG=trailwatch.toml] loadtest/peers/run.sh
#
# Event sets (SETS, default "day synthetic"):
# - day: a realistic day of a 20-account org from `trailwatch-loadtest
#   generate --format ndjson` (3 million events, attacks and look-alikes
#   injected; DAY_ACCOUNTS, DAY_DURATION, DAY_RATE change it), with the
#   dataset's trailwatch.toml (org accounts, trusted CIDRs, registries) for
#   trailwatch and the same placeholder values for rsigma;
# - synthetic: EVENTS (default 200000) records from the vs_parse generator
#   (copies of the Stratus Red Team samples, attack techniques included, plus
#   node-role image pulls);
# - file: EVENTS_FILE (and CONFIG, if given).
#
# Rule sets: the 57 SigmaHQ AWS rules in ../shared/sigma/rules, and the
# built-in pack (rules/pack; rsigma gets its %placeholders% through a
# value_placeholders pipeline made from rules/pack/placeholders.json and the
# config; sigma-rust has no `expand` and no correlations and runs what it
# can load).
#
# Output, measured separately so that it is clear which figure is which:
# - trailwatch-asff: findings as ASFF JSON lines to a file (its normal output);
# - trailwatch-asff-null: the same to /dev/null (findings built, not stored);
# - trailwatch-matches: `--format matches`, one short JSON line per match to
#   a file (the output obligation of rsigma's match lines);
# - rsigma-eval: match lines to a file (its normal output);
# - rsigma-eval-null: the same to /dev/null;
# - rsigma-daemon: its streaming mode, events on stdin, matches to a file;
# - sigma-rust: a library without output; the harness counts matches.
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
SETS="${SETS:-day synthetic}"
[ -n "${EVENTS_FILE:-}" ] && SETS="file"
OUT="$PEERS/out"
RSIGMA="$PEERS/rsigma/bin/rsigma"
HARNESS="$PEERS/sigma-rust-harness/target/release/sigma-rust-harness"
TW="$ROOT/target/release/trailwatch"
LOADTEST="$ROOT/target/release/trailwatch-loadtest"
NOW=2026-11-03T00:00:00Z

say() { printf '\n== %s\n' "$*" >&2; }
die() { echo "run.sh: $*" >&2; exit 1; }

[ -d "$SHARED/sigma/rules" ] || die "needs ../shared next to the repository ($SHARED)"
command -v python3 >/dev/null || die "needs python3 (3.11 or later)"
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

say "building trailwatch and trailwatch-loadtest (release)"
(cd "$ROOT" && cargo build --release --quiet -p trailwatch-processor --bin trailwatch \
    -p trailwatch-loadtest --bin trailwatch-loadtest)

# input_of SET: sets INPUT and CONFIG for an event set, generating it once.
input_of() {
    CONFIG=""
    case "$1" in
        day)
            local d="$PEERS/day-${DAY_ACCOUNTS:-20}-${DAY_DURATION:-24h}-${DAY_RATE:-35}"
            INPUT="$d.ndjson"
            CONFIG="$d/trailwatch.toml"
            if [ ! -s "$INPUT" ]; then
                say "generating the day ($d)"
                "$LOADTEST" generate --out "$d" --format ndjson --force --accounts "${DAY_ACCOUNTS:-20}" \
                    --duration "${DAY_DURATION:-24h}" --rate "${DAY_RATE:-35}"
                # One file in time order (the hourly files sort by name);
                # each hourly file goes once copied (a day is 4 GiB).
                rm -f "$INPUT.tmp"
                for f in "$d"/ndjson/*.ndjson; do cat "$f" >> "$INPUT.tmp" && rm "$f"; done
                mv "$INPUT.tmp" "$INPUT"
            fi ;;
        synthetic)
            INPUT="$PEERS/cloudtrail-$EVENTS.ndjson"
            if [ ! -s "$INPUT" ]; then
                say "generating $EVENTS synthetic CloudTrail records"
                (cd "$ROOT" && TRAILWATCH_BENCH_EVENTS="$EVENTS" TRAILWATCH_BENCH_WRITE="$INPUT" \
                    cargo bench --quiet -p trailwatch-processor --bench vs_parse)
            fi ;;
        file)
            INPUT="$(cd "$(dirname "$EVENTS_FILE")" && pwd)/$(basename "$EVENTS_FILE")"
            CONFIG="${CONFIG_FILE:-${CONFIG:-}}" ;;
        *) die "unknown event set $1 (day, synthetic)" ;;
    esac
}

# rsigma's placeholders: a pipeline with the pack's defaults, overridden by
# the config's [rules.placeholders] as trailwatch does.
placeholders() {
    python3 - "$ROOT/rules/pack/placeholders.json" "$1" "$2" <<'EOF'
import json, sys, tomllib
ph = {k: v["values"] for k, v in json.load(open(sys.argv[1])).items()}
if sys.argv[2]:
    ph.update(tomllib.load(open(sys.argv[2], "rb")).get("rules", {}).get("placeholders", {}))
out = ["name: trailwatch pack placeholders", "priority: 10", "vars:"]
for k, v in ph.items():
    out.append(f"  {k}:")
    out += [f"    - {json.dumps(x)}" for x in v]
out += ["transformations:", "  - id: placeholders", "    type: value_placeholders"]
open(sys.argv[3], "w").write("\n".join(out) + "\n")
EOF
}

# timed NAME STDOUT [--stdin FILE] CMD...: pinned to $CPU; costs in $dir/NAME.json.
timed() {
    local name="$1" out="$2"; shift 2
    local stdin=()
    if [ "$1" = --stdin ]; then stdin=(--stdin "$2"); shift 2; fi
    python3 "$HERE/timed.py" "$dir/$name.json" "$CPU" "$out" "${stdin[@]}" -- "$@" \
        || die "$name failed (see $dir/$name.err)"
}

for set in $SETS; do
    input_of "$set"
    N=$(grep -c . "$INPUT")
    tw_config=()
    [ -n "$CONFIG" ] && tw_config=(--config "$CONFIG")
    placeholders "$CONFIG" "$PEERS/placeholders-$set.yml"
    for rules_name in sigmahq pack; do
        dir="$OUT/$set/$rules_name"
        mkdir -p "$dir"
        rm -f "$dir"/*
        echo "$N" > "$dir/events"
        if [ "$rules_name" = sigmahq ]; then
            rules="$SHARED/sigma/rules"
            tw_rules=(--no-builtin --rules "$rules")
            rs_rules=(-r "$rules")
        else
            rules="$ROOT/rules/pack"
            tw_rules=()
            rs_rules=(-r "$rules" -p "$PEERS/placeholders-$set.yml" --no-detections)
        fi
        say "events: $set ($N, $(basename "$INPUT")), rules: $rules_name, pinned to CPU $CPU"
        tw=("$TW" replay --no-progress --now "$NOW" "${tw_config[@]}" "${tw_rules[@]}")
        rs=("$RSIGMA" engine eval "${rs_rules[@]}" --timestamp-field eventTime --output-format ndjson -e "@$INPUT")
        # Outputs are cut down to what compare.py reads as soon as they are
        # timed: a day of findings on the SigmaHQ rules is 7 GB.
        timed trailwatch-asff "$dir/trailwatch-asff.out" "${tw[@]}" "$INPUT"
        wc -l < "$dir/trailwatch-asff.out" > "$dir/trailwatch-asff.lines"; rm "$dir/trailwatch-asff.out"
        timed trailwatch-asff-null /dev/null "${tw[@]}" "$INPUT"
        timed trailwatch-matches "$dir/trailwatch-matches.out" "${tw[@]}" --format matches "$INPUT"
        timed rsigma-eval "$dir/rsigma-eval.out" "${rs[@]}"
        python3 "$HERE/compare.py" --compact < "$dir/rsigma-eval.out" > "$dir/rsigma-eval.matches"
        rm "$dir/rsigma-eval.out"
        timed rsigma-eval-null /dev/null "${rs[@]}"
        timed rsigma-daemon "$dir/rsigma-daemon.out" --stdin "$INPUT" "$RSIGMA" engine daemon "${rs_rules[@]}" \
            --timestamp-field eventTime --api-addr "unix://$dir/rsigma.sock" --input stdin --output stdout
        python3 "$HERE/compare.py" --compact < "$dir/rsigma-daemon.out" > "$dir/rsigma-daemon.matches"
        rm "$dir/rsigma-daemon.out"
        timed sigma-rust "$dir/sigma-rust.out" "$HARNESS" "$rules" "$INPUT"
        # The rules rsigma could load (it skips, with a warning, those using
        # trailwatch's extensions, e.g. the |none modifier).
        find "$rules" -name '*.yml' -print0 | xargs -0 -n1 "$RSIGMA" rule parse 2> /dev/null \
            | python3 -c 'import json, sys
for line in sys.stdin:
    d = json.loads(line)
    for r in d["rules"] + d["correlations"]:
        print(r.get("id"))' > "$dir/rsigma-loaded.txt"
        # Matched event ids per rule, for the rules whose counts differ (not timed).
        "${rs[@]}" --include-event 2> /dev/null | python3 "$HERE/compare.py" --rsigma-events > "$dir/rsigma-events.tsv"
        "$HARNESS" "$rules" "$INPUT" --per-event > /dev/null 2> "$dir/sigma-rust-events.out"
    done
done

say "results"
python3 "$HERE/compare.py" "$OUT" "$SHARED/sigma/rules" "$ROOT/rules/pack" $SETS | tee "$OUT/summary.txt"
echo "(raw outputs and peers.json in $OUT)" >&2
