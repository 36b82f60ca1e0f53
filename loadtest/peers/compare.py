#!/usr/bin/env python3
"""Reads the outputs of run.sh; prints, per event set and rule set, the cost
of every run (events per wall second and per CPU second, peak RSS, load),
the ratios between trailwatch and the peers for each output obligation, and
every rule whose match counts differ between engines, with example event ids.

usage: compare.py OUT_DIR SIGMAHQ_RULES_DIR PACK_DIR SET...
       compare.py --rsigma-events < rsigma eval --include-event output
           (prints "rule_id<TAB>event id" per match, for the comparison)
       compare.py --compact < rsigma output
           (keeps rule_id and a correlation's group_key of each match line)

Writes OUT_DIR/peers.json with the same figures. Standard library only.
"""
import collections
import json
import os
import re
import sys

# Engines whose matches are counted; the run that counts for each.
COUNTED = {"trailwatch": "trailwatch-matches.out", "rsigma-eval": "rsigma-eval.matches",
           "rsigma-daemon": "rsigma-daemon.matches", "sigma-rust": "sigma-rust.out"}
# Every timed run: (name, what it writes).
RUNS = [
    ("trailwatch-asff", "ASFF findings to a file"),
    ("trailwatch-asff-null", "ASFF findings to /dev/null"),
    ("trailwatch-matches", "match lines to a file"),
    ("rsigma-eval", "match lines to a file"),
    ("rsigma-eval-null", "match lines to /dev/null"),
    ("rsigma-daemon", "match lines to a file"),
    ("sigma-rust", "counts only (library)"),
]
# (label, trailwatch run, peer runs): the comparisons with equal obligations.
RATIOS = [
    ("each engine's normal output", "trailwatch-asff", ["rsigma-eval", "rsigma-daemon"]),
    ("same obligation: one line per match, to a file", "trailwatch-matches", ["rsigma-eval", "rsigma-daemon"]),
    ("output discarded (built, written to /dev/null)", "trailwatch-asff-null", ["rsigma-eval-null"]),
    ("matching with the least output each", "trailwatch-matches", ["rsigma-eval-null", "sigma-rust"]),
]


def rsigma_events():
    rule = re.compile(r'"rule_id":"([^"]*)"')
    eid = re.compile(r'"eventID":"([^"]*)"')
    out = sys.stdout
    for line in sys.stdin:
        r, e = rule.search(line), eid.search(line)
        if r and e:
            out.write(f"{r.group(1)}\t{e.group(1)}\n")
        elif r and line.startswith("{"):
            # An EventBridge event: its own id (a regex could hit a nested one).
            try:
                ev = json.loads(line).get("event") or {}
            except json.JSONDecodeError:
                continue
            if isinstance(ev, dict) and ev.get("id"):
                out.write(f"{r.group(1)}\t{ev['id']}\n")


def compact():
    for m in jsonl_lines(sys.stdin):
        keep = {"rule_id": m.get("rule_id") or m.get("rule_title")}
        if "group_key" in m:
            keep["group_key"] = m["group_key"]
        sys.stdout.write(json.dumps(keep) + "\n")


def rule_docs(path):
    """(id, title, is_correlation, referenced names) per YAML document; a
    line-based reading of top-level keys, enough for Sigma rule files."""
    docs = []
    for root, _, files in os.walk(path):
        for f in sorted(files):
            if not f.endswith((".yml", ".yaml")):
                continue
            text = open(os.path.join(root, f), encoding="utf-8").read()
            for doc in re.split(r"^---\s*$", text, flags=re.M):
                top = dict(re.findall(r"^([A-Za-z_-]+):[ \t]*(.*)$", doc, flags=re.M))
                if "title" not in top:
                    continue
                refs = []
                m = re.search(r"^\s+rules:[ \t]*(.*)$", doc, flags=re.M)
                if "correlation" in top and m:
                    if m.group(1).startswith("["):
                        refs = [r.strip() for r in m.group(1).strip("[]").split(",") if r.strip()]
                    else:
                        for line in doc[m.end():].splitlines()[1:]:
                            item = re.match(r"^\s+-\s+(\S+)\s*$", line)
                            if not item:
                                break
                            refs.append(item.group(1))
                docs.append({
                    "id": top.get("id", "").strip().strip("'\""),
                    "name": top.get("name", "").strip().strip("'\""),
                    "title": top["title"].strip().strip("'\""),
                    "correlation": "correlation" in top,
                    "refs": refs,
                })
    return docs


def jsonl_lines(lines):
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                pass


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        yield from jsonl_lines(f)


def counts_of(d, engine):
    out = os.path.join(d, COUNTED[engine])
    c = collections.Counter()
    if engine == "trailwatch":
        for m in jsonl(out):
            c[m["rule_id"]] += 1
    elif engine.startswith("rsigma"):
        for m in jsonl(out):
            c[m["rule_id"]] += 1
    else:
        summary = next(jsonl(out))
        c.update({k: v for k, v in summary["matches"].items() if v})
    return c


def event_sets(d):
    """rule id → set of event ids, per engine (detections only)."""
    sets = {e: collections.defaultdict(set) for e in ("trailwatch", "rsigma", "sigma-rust")}
    for m in jsonl(os.path.join(d, "trailwatch-matches.out")):
        if m.get("event_id") and "count" not in m:
            sets["trailwatch"][m["rule_id"]].add(m["event_id"])
    for line in open(os.path.join(d, "rsigma-events.tsv"), encoding="utf-8"):
        r, _, e = line.rstrip("\n").partition("\t")
        sets["rsigma"][r].add(e)
    for line in open(os.path.join(d, "sigma-rust-events.out"), encoding="utf-8"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "match":
            sets["sigma-rust"][parts[1]].add(parts[2])
    return sets


def correlation_groups(d):
    """correlation rule id → distinct group keys it fired for, per engine:
    rsigma alerts again on every event past the threshold, trailwatch once per
    window and group, so alerts are compared by group."""
    groups = {e: collections.defaultdict(set) for e in ("trailwatch", "rsigma")}
    for m in jsonl(os.path.join(d, "trailwatch-matches.out")):
        if "count" in m:
            groups["trailwatch"][m["rule_id"]].add(tuple(sorted(m.get("group", {}).items())))
    for m in jsonl(os.path.join(d, "rsigma-eval.matches")):
        if "group_key" in m:
            groups["rsigma"][m.get("rule_id")].add(tuple(sorted(tuple(kv) for kv in m["group_key"])))
    return groups


def timing(d, n):
    t = {}
    for name, what in RUNS:
        p = os.path.join(d, name + ".json")
        if not os.path.exists(p):
            continue
        r = json.load(open(p))
        r["writes"] = what
        r["events_per_wall_s"] = n / r["wall_s"]
        r["events_per_cpu_s"] = n / max(r["cpu_s"], 1e-9)
        t[name] = r
    return t


def report(d, set_name, rules_dir, rules_name):
    n = int(open(os.path.join(d, "events")).read())
    docs = rule_docs(rules_dir)
    by_key = {}
    for doc in docs:
        by_key[doc["id"]] = doc
        if doc["name"]:
            by_key[doc["name"]] = doc
    base = {by_key[r]["id"] for doc in docs if doc["correlation"] for r in doc["refs"] if r in by_key}
    harness = next(jsonl(os.path.join(d, "sigma-rust.out")))
    sr_failed = {re.search(r"\(([^)]*)\)", f).group(1) for f in harness["rules_failed"] if "(" in f}
    sr_loaded = set(harness["matches"].keys())
    rs_path = os.path.join(d, "rsigma-loaded.txt")
    rs_loaded = set(open(rs_path).read().split()) if os.path.exists(rs_path) else None
    print(f"\n## events: {set_name} ({n}), rules: {rules_name} ({len(docs)} rule documents, "
          f"{len(base)} base rules used only by correlations)")
    t = timing(d, n)
    print(f"{'run':<22} {'writes':<28} {'wall s':>7} {'ev/s wall':>10} {'CPU s':>7} {'ev/CPU-s':>10} "
          f"{'RSS MiB':>8} {'load 1m':>8}")
    for name, r in t.items():
        print(f"{name:<22} {r['writes']:<28} {r['wall_s']:>7.2f} {r['events_per_wall_s']:>10.0f} {r['cpu_s']:>7.2f} "
              f"{r['events_per_cpu_s']:>10.0f} {r['peak_rss_bytes'] / 2**20:>8.1f} {r['load_before'][0]:>8.2f}")
    print(f"(sigma-rust's own timer, matching only, without reading and loading: "
          f"{harness['events_per_s']:.0f} events/s; it loaded {harness['rules_loaded']} rules, "
          f"failed {len(harness['rules_failed'])}, skipped {harness['correlations_skipped']} correlations)")
    for f in harness["rules_failed"]:
        print(f"  sigma-rust could not load: {f}")
    if rs_loaded is not None:
        for doc in docs:
            if doc["id"] not in rs_loaded:
                print(f"  rsigma could not load: {doc['title']} ({doc['id']})")
    ratios = []
    print("trailwatch ÷ peer, events per CPU second (per wall second):")
    for label, tw, peers in RATIOS:
        if tw not in t:
            continue
        parts = []
        for p in peers:
            if p in t:
                cpu = t[tw]["events_per_cpu_s"] / t[p]["events_per_cpu_s"]
                wall = t[tw]["events_per_wall_s"] / t[p]["events_per_wall_s"]
                parts.append(f"{tw} ÷ {p} = {cpu:.1f}x ({wall:.1f}x)")
                ratios.append({"comparison": label, "trailwatch": tw, "peer": p, "per_cpu_s": cpu, "per_wall_s": wall})
        print(f"  {label}: " + "; ".join(parts))
    counts = {e: counts_of(d, e) for e in COUNTED}
    rows = []
    for doc in docs:
        rid = doc["id"]
        vals = {}
        for e in COUNTED:
            if e == "sigma-rust" and (doc["correlation"] or rid in sr_failed or rid not in sr_loaded):
                vals[e] = None
            elif e == "trailwatch" and rid in base:
                vals[e] = None  # not reported alone
            elif e.startswith("rsigma") and rs_loaded is not None and rid not in rs_loaded:
                vals[e] = None  # rsigma could not load it
            else:
                vals[e] = counts[e].get(rid, 0)
        known = [v for v in vals.values() if v is not None]
        rows.append({"id": rid, "title": doc["title"], "base": rid in base, "correlation": doc["correlation"],
                     "matches": vals, "agree": len(set(known)) <= 1})
    agree = [r for r in rows if r["agree"]]
    matched = sum(1 for r in agree if any(r["matches"].values()))
    total = {e: sum(counts[e].values()) for e in COUNTED}
    print(f"matches in all: " + ", ".join(f"{e} {v}" for e, v in total.items()))
    print(f"{len(agree)} of {len(rows)} rules agree across the engines that run them "
          f"({matched} of those matched something); disagreements:")
    fmt = lambda v: "n/a" if v is None else str(v)
    print(f"  {'rule':<58} " + " ".join(f"{e:>13}" for e in COUNTED))
    sets = event_sets(d)
    groups = correlation_groups(d)
    for r in rows:
        if r["agree"]:
            continue
        kind = " [correlation]" if r["correlation"] else " [base]" if r["base"] else ""
        label = (r["title"][:46] + kind)[:58]
        print(f"  {label:<58} " + " ".join(f"{fmt(r['matches'][e]):>13}" for e in COUNTED))
        if r["correlation"]:
            a, b = groups["trailwatch"].get(r["id"], set()), groups["rsigma"].get(r["id"], set())
            r["groups"] = {"trailwatch": len(a), "rsigma": len(b), "rsigma_only": sorted(map(str, b - a))[:3],
                           "trailwatch_only": sorted(map(str, a - b))[:3]}
            print(f"      distinct groups: trailwatch {len(a)}, rsigma {len(b)}, in both {len(a & b)}")
            for label2, x in (("rsigma only", b - a), ("trailwatch only", a - b)):
                if x:
                    print(f"      {label2}: {len(x)}, e.g. {'; '.join(','.join(f'{k}={v}' for k, v in g) for g in sorted(x)[:2])}")
            continue
        a, b, c = sets["trailwatch"].get(r["id"], set()), sets["rsigma"].get(r["id"], set()), \
            sets["sigma-rust"].get(r["id"], set())
        r["examples"] = {}
        for label2, x, y in (("trailwatch not rsigma", a, b), ("rsigma not trailwatch", b, a),
                             ("trailwatch not sigma-rust", a, c), ("sigma-rust not trailwatch", c, a)):
            if "trailwatch" in label2 and r["matches"]["trailwatch"] is None:
                continue
            if "sigma-rust" in label2 and r["matches"]["sigma-rust"] is None:
                continue
            if "rsigma" in label2 and r["matches"]["rsigma-eval"] is None:
                continue
            diff = sorted(x - y)
            if diff:
                r["examples"][label2] = {"count": len(diff), "event_ids": diff[:3]}
                print(f"      {label2}: {len(diff)} events, e.g. {', '.join(diff[:3])}")
    return {"events": n, "timing": t, "ratios": ratios, "matches_total": total,
            "sigma_rust": {k: harness[k] for k in ("rules_loaded", "rules_failed", "correlations_skipped",
                                                   "events_per_s")},
            "rules": rows}


def main():
    if sys.argv[1:] == ["--rsigma-events"]:
        return rsigma_events()
    if sys.argv[1:] == ["--compact"]:
        return compact()
    out_dir, sigmahq, pack = sys.argv[1:4]
    report_all = {"sets": {}}
    for set_name in sys.argv[4:]:
        for rules_name, rules_dir in (("sigmahq", sigmahq), ("pack", pack)):
            d = os.path.join(out_dir, set_name, rules_name)
            if os.path.isdir(d):
                report_all["sets"][f"{set_name}/{rules_name}"] = report(d, set_name, rules_dir, rules_name)
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump(report_all, f, indent=1)


if __name__ == "__main__":
    main()
