#!/usr/bin/env bash
# Do trailwatch and rsigma read Sigma rules the same way? Both evaluate the
# given rules (any log source: Windows, Linux, cloud, ...) over events made
# from the rules' own values (semantics.py make: matches with every modifier
# applied, flipped case, near misses, arrays, nested fields, all searches at
# once); then every (rule, event) pair only one engine matched is printed.
# Exit 1 when the engines disagree.
#
#   loadtest/peers/semantics.sh RULES_DIR...      # e.g. a SigmaHQ checkout's rules*/
#
# Rules either engine refuses are left out and listed first (rsigma stops
# at the first rule it cannot compile). rsigma 0.23.0 is installed as in
# run.sh (target/peers/, ~10 minutes); trailwatch is target/release's, else
# target/debug's (TW to choose). PyYAML: the .venv's Python (scripts/test
# installs it), else python3's.
set -euo pipefail

[ $# -ge 1 ] || { sed -n '2,16p' "$0"; exit 2; }
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$ROOT/loadtest/peers"
PEERS="${PEERS_DIR:-$ROOT/target/peers}"
RSIGMA="$PEERS/rsigma/bin/rsigma"
TW="${TW:-$ROOT/target/release/trailwatch}"
[ -x "$TW" ] || TW="$ROOT/target/debug/trailwatch"
PY="$ROOT/.venv/bin/python"
[ -x "$PY" ] || PY=python3
OUT="$PEERS/semantics"
say() { echo "semantics: $*" >&2; }

[ -x "$TW" ] || { say "no trailwatch binary: cargo build --release -p trailwatch-processor"; exit 2; }
if [ ! -x "$RSIGMA" ]; then
    say "installing rsigma 0.23.0 into $PEERS/rsigma (about 10 minutes on 2 cores)"
    cargo install rsigma@0.23.0 --locked --root "$PEERS/rsigma"
fi

rm -rf "$OUT"
mkdir -p "$OUT/src" "$OUT/refused"
n=0
for dir in "$@"; do
    n=$((n + 1))
    cp -r "$dir" "$OUT/src/$n"
done
"$PY" "$HERE/semantics.py" make "$OUT/src" "$OUT/rules" "$OUT/events.ndjson"

# One rule at a time: what each engine refuses, and why.
one="$(mktemp -d)"
trap 'rm -rf "$one"' EXIT
refused=0
while IFS= read -r -d '' f; do
    rel="${f#"$OUT/rules/"}"
    why=""
    if ! out="$("$TW" rules validate "$f" 2>&1)"; then
        why="trailwatch: $(grep -m1 -v '^[0-9]* rule errors*$' <<<"$out" | sed "s|^.*$rel:||")"
    fi
    rm -f "$one"/*
    cp "$f" "$one/"
    if ! "$RSIGMA" rule validate "$one" --output-format ndjson 2>/dev/null | grep -q '"status":"ok"'; then
        why="${why:+$why; }rsigma: $("$RSIGMA" rule validate "$one" --output-format ndjson 2>&1 | grep -m1 -o '"errors":"[^"]*' | cut -c11- || true)"
    fi
    if [ -n "$why" ]; then
        say "left out $rel: $why"
        mkdir -p "$(dirname "$OUT/refused/$rel")"
        mv "$f" "$OUT/refused/$rel"
        refused=$((refused + 1))
    fi
done < <(find "$OUT/rules" -type f \( -name '*.yml' -o -name '*.yaml' \) -print0)
# Whole-set refusals (an id defined twice, a correlation naming a rule left out).
while ! out="$("$TW" rules validate "$OUT/rules" 2>&1)"; do
    f="$(grep -m1 -o "^[^:]*$OUT/rules/[^:]*" <<<"$out" | sed 's/^error: //')"
    [ -n "$f" ] && [ -f "$f" ] || { echo "$out" >&2; exit 2; }
    say "left out ${f#"$OUT/rules/"}: $(grep -m1 "$f" <<<"$out" | sed "s|^.*$f:||")"
    mv "$f" "$OUT/refused/"
    refused=$((refused + 1))
done
say "$refused rule files left out"

# No field mappings: the default maps the taxonomy's `src_ip` to CloudTrail's
# `sourceIPAddress`, which here would only look like a difference.
printf '[rules]\nfield_mappings = {}\n' > "$OUT/trailwatch.toml"
"$TW" replay --config "$OUT/trailwatch.toml" --no-builtin --rules "$OUT/rules" --format matches --no-progress \
    -o "$OUT/trailwatch.out" "$OUT/events.ndjson" 2> "$OUT/trailwatch.err"
"$RSIGMA" engine eval -r "$OUT/rules" --include-event --output-format ndjson \
    -e "@$OUT/events.ndjson" > "$OUT/rsigma.out" 2> "$OUT/rsigma.err"
"$PY" "$HERE/semantics.py" compare "$OUT/trailwatch.out" "$OUT/rsigma.out" "$OUT/events.ndjson" "$OUT/rules"
