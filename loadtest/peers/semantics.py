#!/usr/bin/env python3
"""Differential check of Sigma semantics between trailwatch and rsigma, on
rules of any log source (semantics.sh drives it).

  semantics.py make RULES_DIR OUT_RULES_DIR EVENTS_FILE
      copies the rules with `logsource` set to aws/cloudtrail (nothing else
      changed, byte for byte: trailwatch evaluates only the log sources it
      reads, rsigma ignores logsource) and writes CloudTrail-shaped events
      made from the rules' own values: each search alternative with its
      modifiers applied (contains, windash with '/', en dash and horizontal
      bar, base64offset at each offset, utf16 + base64, cidr, gt/lt, a
      string the `|re` matches, ...), the same with the case flipped (ASCII
      and Unicode upper case), a near miss, wildcards over a line break and
      empty, booleans as text, `exists` both ways, the value inside an
      array, dotted fields as nested objects (also inside an array of
      objects), keywords in another field (and under `'|all'`), and all of a rule's searches at
      once.
  semantics.py compare TRAILWATCH_MATCHES RSIGMA_OUTPUT EVENTS_FILE RULES_DIR
      prints the (rule, event) pairs only one engine matched, per rule.

Standard library and PyYAML (the .venv has it) only.
"""
import base64
import collections
import ipaddress
import json
import os
import re
import sys

import yaml

LOGSOURCE = re.compile(r"^logsource:[ \t]*\r?\n(?:(?:[ \t]+[^\r\n]*|[ \t]*)\r?\n)*", re.M)


def walk(d):
    for root, _, files in os.walk(d):
        for f in sorted(files):
            if f.endswith((".yml", ".yaml")):
                yield os.path.join(root, f)


def unwild(s, star="W1", one="Q"):
    """A string the Sigma wildcard pattern `s` matches, `*` and `?` replaced
    by `star` and `one`; escaped ones (and `\\\\`) kept literal."""
    out, i = [], 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] in "*?\\":
            out.append(s[i + 1])
            i += 2
            continue
        out.append({"*": star, "?": one}.get(c, c))
        i += 1
    return "".join(out)


CATEGORY = {"CATEGORY_DIGIT": "1", "CATEGORY_SPACE": " ", "CATEGORY_WORD": "w"}


def regex_example(pattern):
    """A string the regex matches (best effort; None when it cannot tell)."""
    try:
        import re._parser as sre
    except ImportError:
        import sre_parse as sre
    try:
        tree = sre.parse(pattern)
    except Exception:
        return None

    def gen(items):
        out = []
        for op, av in items:
            name = str(op)
            if name == "LITERAL":
                out.append(chr(av))
            elif name == "NOT_LITERAL":
                out.append("a" if av != ord("a") else "b")
            elif name == "ANY":
                out.append("x")
            elif name == "IN":
                c = None
                for iop, iav in av:
                    n = str(iop)
                    if n == "NEGATE":
                        c = "~"
                        break
                    if n == "LITERAL":
                        c = chr(iav)
                    elif n == "RANGE":
                        c = chr(iav[0])
                    elif n == "CATEGORY":
                        c = CATEGORY.get(str(iav), "a")
                    if c:
                        break
                out.append(c or "a")
            elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
                lo, hi, sub = av
                out.append(gen(sub) * max(lo, 1 if hi > 0 else 0))
            elif name == "SUBPATTERN":
                out.append(gen(av[-1]))
            elif name == "ATOMIC_GROUP":
                out.append(gen(av))
            elif name == "BRANCH":
                out.append(gen(av[1][0]))
            elif name == "CATEGORY":
                out.append(CATEGORY.get(str(av), "a"))
            elif name in ("AT", "ASSERT", "ASSERT_NOT", "GROUPREF"):
                continue
            else:
                raise ValueError(name)
        return "".join(out)

    try:
        return gen(tree)
    except Exception:
        return None


def b64offsets(s):
    b = s.encode()
    return [base64.b64encode(p + b).decode() for p in (b"", b"a", b"ab")]


def gen_value(v, mods, variant):
    """A value for one search item under `mods`: variant 0 should match,
    1 is the same with its case flipped (other dashes under windash, another
    base64 offset), 2 a near miss, 3 wildcards over a line break (`*` ->
    "a\\nb", `?` -> "\\n"), 4 Unicode upper case, 5 wildcards empty (`*` ->
    "", `?` -> "": a near miss where the pattern has `?`). Numbers: as text,
    a float; comparisons inside and on the bound; cidr just
    outside; base64 with its case flipped (a near miss)."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower() if variant == 1 else v
    if isinstance(v, (int, float)):
        # Comparisons: inside, then on the bound (outside for gt/lt).
        step = {"gt": 1, "gte": 0, "lt": -1, "lte": 0}
        for op, d in step.items():
            if op in mods:
                return v + d if variant != 2 else v - d if d else v + (1 if op == "lte" else -1)
        # A number as text, as a float, a near miss. (Text with a leading
        # zero, "04624" for 4624, is a known difference: rsigma compares it
        # as a number, trailwatch as text.)
        return {0: v, 1: str(v), 2: v + 1, 3: float(v)}.get(variant, v)
    s = str(v)
    if "cidr" in mods:
        try:
            net = ipaddress.ip_network(s, strict=False)
            if variant == 2:  # just outside
                outside = int(net.broadcast_address) + 1
                return str(ipaddress.ip_address(outside)) if outside < 2 ** net.max_prefixlen else s
            return str(net.network_address + (1 if net.num_addresses > 1 else 0))
        except ValueError:
            return s
    if "re" in mods:
        ex = regex_example(s)
        if ex is None:
            return s
        return {1: ex.swapcase(), 2: "pre" + ex + "post", 4: ex.upper()}.get(variant, ex)
    if "expand" in mods:
        return s
    if "windash" in mods:
        dash = {1: "\u2013", 2: "\u2015"}.get(variant, "/")
        s = re.sub(r"(^|\s)-", lambda m: m.group(1) + dash, s)
        variant = 0
    if any(m in mods for m in ("utf16le", "wide", "utf16", "utf16be")) and ("base64" in mods or "base64offset" in mods):
        enc = "utf-16-be" if "utf16be" in mods else "utf-16-le"
        b = s.encode(enc)
        return "pre" + base64.b64encode(b).decode() + "post"
    if "base64offset" in mods:
        return "x" + b64offsets(unwild(s))[variant % 3] + "y"
    if "base64" in mods:
        enc = base64.b64encode(unwild(s).encode()).decode()
        return enc.swapcase() if variant == 1 else enc
    wild = {3: ("a\nb", "\n"), 5: ("", "")}.get(variant, ("W1", "Q"))
    t = unwild(s, *wild)
    if variant == 4:
        t = t.upper()
    elif variant == 1:
        t = t.swapcase()
    elif variant == 2:
        t = t[:-1] if len(t) > 1 else t + "z"
    if "contains" in mods:
        return "pre " + t + " post"
    if "startswith" in mods:
        return t + " post"
    if "endswith" in mods:
        return "pre " + t
    return t


def items(search):
    """Alternatives of a search: a list of dicts (OR), each dict AND of items."""
    if isinstance(search, dict):
        return [search]
    if isinstance(search, list):
        return [a for a in search if isinstance(a, dict)] or [{"__keywords__": search}]
    return []


def nest(ev):
    """Dotted field names as nested objects (`a.b: v` -> `a: {b: v}`)."""
    out = {}
    for k, v in ev.items():
        *parents, last = k.split(".")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                return None
        node[last] = v
    return out


def event_of(alt, pick, variant):
    """One event from a search alternative (a map of items): the value at
    `pick` of each item's list, made per `variant` (see gen_value)."""
    ev = {}
    for key, vals in alt.items():
        if key == "__keywords__":
            kw = [v for v in vals if isinstance(v, (str, int))]
            if kw:
                ev["Message"] = "pre " + unwild(str(kw[pick])) + " post"
            continue
        field, *mods = str(key).split("|")
        if not field:
            # Keywords with modifiers (`'|all': [...]`): one text holding them.
            field = "Message"
        if "fieldref" in mods:
            ev[field] = ev.get(str(vals), "ref")
        elif "exists" in mods:
            if (vals is True) == (variant != 2):
                ev[field] = "present"
        else:
            lst = vals if isinstance(vals, list) else [vals]
            if not lst:
                continue
            if "all" in mods:
                rest = [m for m in mods if m != "all"]
                v = " ".join(str(gen_value(x, rest, variant)) for x in lst)
            else:
                v = gen_value(lst[pick], mods, variant)
            # The same field under other modifiers (`CommandLine|contains`
            # and `CommandLine|endswith`): one value that has both parts.
            if isinstance(ev.get(field), str) and isinstance(v, str):
                v = v + " " + ev[field] if "startswith" in mods else ev[field] + " " + v
            ev[field] = v
    return ev


def events_for(doc):
    det = doc.get("detection")
    if not isinstance(det, dict):
        return
    firsts = []
    for name, search in det.items():
        if name in ("condition", "timeframe"):
            continue
        for alt in items(search):
            for pick in (0, -1):
                for variant in range(6):
                    ev = event_of(alt, pick, variant)
                    yield ev
                    if variant or pick:
                        continue
                    firsts.append(ev)
                    # The value inside an array: any element may match.
                    yield {k: (["other", v] if isinstance(v, (str, int)) else v) for k, v in ev.items()}
                    if "Message" in ev:
                        yield {"Data": ev["Message"]}
                    nested = nest(ev)
                    if nested and nested != ev:
                        yield nested
                        # The path crosses an array of objects.
                        yield {k: ([{"other": 1}, v] if isinstance(v, dict) else v) for k, v in nested.items()}
    # Every search at once: what `sel and not filter` turns on.
    if len(firsts) > 1:
        merged, joined = {}, {}
        for ev in firsts:
            merged.update(ev)
            for k, v in ev.items():
                old = joined.get(k)
                joined[k] = old + " " + v if isinstance(old, str) and isinstance(v, str) else v
        yield merged
        # Searches that constrain one field (`all of selection_*` over
        # CommandLine): all their values in it.
        if joined != merged:
            yield joined


def make(src, out_rules, events_path):
    n_rules = n_events = 0
    seen = set()
    with open(events_path, "w") as ef:
        for path in walk(src):
            text = open(path, encoding="utf-8", newline="").read()
            dest = os.path.join(out_rules, os.path.relpath(path, src))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            new = LOGSOURCE.sub("logsource:\n    product: aws\n    service: cloudtrail\n", text)
            open(dest, "w", encoding="utf-8", newline="").write(new)
            n_rules += 1
            try:
                docs = list(yaml.safe_load_all(text))
            except yaml.YAMLError:
                continue  # the engines say why when they load it
            for doc in docs:
                if not isinstance(doc, dict):
                    continue
                for ev in events_for(doc):
                    key = json.dumps(ev, sort_keys=True, default=str)
                    if key in seen:
                        continue
                    seen.add(key)
                    n_events += 1
                    full = {"eventVersion": "1.08", "eventTime": "2026-12-01T00:00:00Z",
                            "eventSource": "semantics.local", "eventName": "Semantics"}
                    full.update(ev)
                    full["eventID"] = f"ev-{n_events}"
                    ef.write(json.dumps(full, default=str) + "\n")
    print(f"semantics: {n_rules} rule files, {n_events} events", file=sys.stderr)


def rule_paths(rules_dir):
    paths = {}
    for root, _, files in os.walk(rules_dir):
        for f in files:
            t = open(os.path.join(root, f), encoding="utf-8").read()
            for i in re.findall(r"^id:\s*['\"]?([0-9A-Za-z_./-]+)", t, flags=re.M):
                paths.setdefault(i, os.path.relpath(os.path.join(root, f), rules_dir))
    return paths


def compare(tw_path, rs_path, ev_path, rules_dir):
    tw = {(m["rule_id"], m["event_id"]) for m in map(json.loads, open(tw_path))}
    rs = set()
    rule = re.compile(r'"rule_id":"([^"]*)"')
    eid = re.compile(r'"eventID":"(ev-[0-9]+)"')
    for line in open(rs_path):
        r, e = rule.search(line), eid.search(line)
        if r and e:
            rs.add((r.group(1), e.group(1)))
    events = {e["eventID"]: e for e in map(json.loads, open(ev_path))}
    paths = rule_paths(rules_dir)
    only = {"trailwatch": collections.defaultdict(list), "rsigma": collections.defaultdict(list)}
    for r, e in tw - rs:
        only["trailwatch"][r].append(e)
    for r, e in rs - tw:
        only["rsigma"][r].append(e)
    matched = len({r for r, _ in tw | rs})
    print(f"semantics: {len(events)} events, {len(paths)} rules ({matched} match some event); "
          f"(rule, event) pairs matched: trailwatch {len(tw)}, rsigma {len(rs)}, both {len(tw & rs)}; "
          f"only trailwatch {len(tw - rs)} in {len(only['trailwatch'])} rules, "
          f"only rsigma {len(rs - tw)} in {len(only['rsigma'])} rules")
    for engine, d in only.items():
        for r, es in sorted(d.items(), key=lambda x: -len(x[1])):
            print(f"\n== only {engine}: {r} {paths.get(r, '?')}: {len(es)} events, e.g.")
            for e in sorted(es, key=lambda x: int(x.split("-")[1]))[:3]:
                ev = {k: v for k, v in events[e].items()
                      if k not in ("eventVersion", "eventTime", "eventSource", "eventName")}
                print("   ", json.dumps(ev)[:400])
    return 1 if tw != rs else 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "make":
        make(*sys.argv[2:5])
    elif len(sys.argv) == 6 and sys.argv[1] == "compare":
        sys.exit(compare(*sys.argv[2:6]))
    else:
        sys.exit(__doc__)
