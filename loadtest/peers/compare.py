#!/usr/bin/env python3
"""Reads the outputs of run.sh; prints events/s per engine and every rule
whose match counts differ between engines, with example event ids.

usage: compare.py OUT_DIR EVENTS SIGMAHQ_RULES_DIR PACK_DIR

Writes OUT_DIR/peers.json with the same figures. Standard library only.
"""
import collections
import json
import os
import re
import sys

ENGINES = ["trailwatch", "rsigma-eval", "rsigma-daemon", "sigma-rust"]


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


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    pass


def counts_of(d, engine):
    out = os.path.join(d, engine + ".out")
    c = collections.Counter()
    if engine == "trailwatch":
        for f in jsonl(out):
            c[f["GeneratorId"]] += 1
    elif engine.startswith("rsigma"):
        for m in jsonl(out):
            c[m.get("rule_id") or m.get("rule_title")] += 1
    else:
        summary = next(jsonl(out))
        c.update({k: v for k, v in summary["matches"].items() if v})
    return c


def event_sets(d):
    """rule id → set of event ids, per engine (detections only)."""
    sets = {e: collections.defaultdict(set) for e in ("trailwatch", "rsigma", "sigma-rust")}
    for f in jsonl(os.path.join(d, "trailwatch.out")):
        if "trailwatch/WindowStart" in f.get("ProductFields", {}):
            continue
        for eid in f["ProductFields"].get("trailwatch/EventIds", "").split(","):
            if eid:
                sets["trailwatch"][f["GeneratorId"]].add(eid.strip())
    for m in jsonl(os.path.join(d, "rsigma-events.out")):
        ev = m.get("event") or {}
        if isinstance(ev, dict) and ev.get("eventID"):
            sets["rsigma"][m.get("rule_id")].add(ev["eventID"])
    path = os.path.join(d, "sigma-rust-events.out")
    if os.path.exists(path):
        for line in open(path, encoding="utf-8"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "match":
                sets["sigma-rust"][parts[1]].add(parts[2])
    return sets


def main():
    out_dir, n = sys.argv[1], int(sys.argv[2])
    sources = {"sigmahq": sys.argv[3], "pack": sys.argv[4]}
    report = {"events": n, "sets": {}}
    for set_name, rules_dir in sources.items():
        d = os.path.join(out_dir, set_name)
        if not os.path.isdir(d):
            continue
        docs = rule_docs(rules_dir)
        by_key = {}
        for doc in docs:
            by_key[doc["id"]] = doc
            if doc["name"]:
                by_key[doc["name"]] = doc
        base = {by_key[r]["id"] for doc in docs if doc["correlation"] for r in doc["refs"] if r in by_key}
        titles = {doc["id"]: doc["title"] for doc in docs}
        harness = next(jsonl(os.path.join(d, "sigma-rust.out")))
        sr_failed = {re.search(r"\(([^)]*)\)", f).group(1) for f in harness["rules_failed"] if "(" in f}
        sr_loaded = set(harness["matches"].keys())
        print(f"\n## rules: {set_name} ({len(docs)} rule documents, {len(base)} base rules used only by correlations)")
        print(f"{'engine':<15} {'wall s':>8} {'events/s':>10} {'trailwatch is':>14}")
        timing = {}
        for e in ENGINES:
            t = float(open(os.path.join(d, e + ".time")).read())
            timing[e] = {"seconds": t, "events_per_s": n / t}
        for e in ENGINES:
            r = timing[e]["events_per_s"]
            x = timing["trailwatch"]["events_per_s"] / r
            print(f"{e:<15} {timing[e]['seconds']:>8.2f} {r:>10.0f} {x:>13.1f}x")
        print(f"(sigma-rust's own timer, matching only, without reading and loading: "
              f"{harness['events_per_s']:.0f} events/s; it loaded {harness['rules_loaded']} rules, "
              f"failed {len(harness['rules_failed'])}, skipped {harness['correlations_skipped']} correlations)")
        for f in harness["rules_failed"]:
            print(f"  sigma-rust could not load: {f}")
        counts = {e: counts_of(d, e) for e in ENGINES}
        rows = []
        for doc in docs:
            rid = doc["id"]
            vals = {}
            for e in ENGINES:
                if e == "sigma-rust" and (doc["correlation"] or rid in sr_failed or rid not in sr_loaded):
                    vals[e] = None
                elif e == "trailwatch" and rid in base:
                    vals[e] = None  # not reported alone
                else:
                    vals[e] = counts[e].get(rid, 0)
            known = [v for v in vals.values() if v is not None]
            rows.append({"id": rid, "title": doc["title"], "base": rid in base, "correlation": doc["correlation"],
                         "matches": vals, "agree": len(set(known)) <= 1})
        agree = [r for r in rows if r["agree"]]
        print(f"\n{len(agree)} of {len(rows)} rules agree across the engines that run them "
              f"({sum(1 for r in agree if any(r['matches'].values()))} of those matched something); disagreements:")
        fmt = lambda v: "n/a" if v is None else str(v)
        print(f"  {'rule':<58} " + " ".join(f"{e:>13}" for e in ENGINES))
        sets = event_sets(d)
        for r in rows:
            if r["agree"]:
                continue
            kind = " [correlation]" if r["correlation"] else " [base]" if r["base"] else ""
            label = (r["title"][:46] + kind)[:58]
            print(f"  {label:<58} " + " ".join(f"{fmt(r['matches'][e]):>13}" for e in ENGINES))
            if r["correlation"]:
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
                diff = sorted(x - y)
                if diff:
                    r["examples"][label2] = {"count": len(diff), "event_ids": diff[:3]}
                    print(f"      {label2}: {len(diff)} events, e.g. {', '.join(diff[:3])}")
        report["sets"][set_name] = {"timing": timing, "sigma_rust": {k: harness[k] for k in
                                    ("rules_loaded", "rules_failed", "correlations_skipped", "events_per_s")},
                                    "rules": rows}
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
