"""Render the trailwatch configuration central.yaml writes to SSM, and check it.

The stack builds the service's TOML from Fn::Join / Fn::Sub / Fn::If pieces;
a typo there would only show when the task starts in AWS. This renders the
value for example resource names, once per combination of the conditions it
uses, and fails unless every ${...} resolved and the result parses as TOML
with the sections the service plan defines. It does the same for the ADOT
collector sidecar's configuration (AOT_CONFIG_CONTENT): valid YAML, exactly the
pipelines of what is enabled (metrics, traces), every component they name
defined, and the endpoints matching the service configuration's. With
--trailwatch BIN it also hands rendered service configurations to the real
validation (`trailwatch config --config FILE`, which loads the rules and makes
the leases/re-keying plan as `run` does): each major combination must be
accepted, except leases without the re-keyed stream, which the built-in pack
must make it refuse (and which must pass with `[rules] builtin = false`).
Run by scripts/lint-deploy with the .venv's Python (it reads the template
with cfn-lint's YAML loader).

    .venv/bin/python deploy/render-config.py [--print] [--print-collector] [--rules-toml FILE] [--trailwatch BIN]
"""

import argparse
import itertools
import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from cfnlint.decode import decode

TEMPLATE = Path(__file__).parent / "cloudformation" / "central.yaml"

# What CloudFormation would substitute: pseudo parameters, parameter values
# and each resource's Ref or attribute, with plausible example values.
# Parameters not named here take their template default.
EXAMPLE = {
    "AWS::StackName": "trailwatch",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "999999999999",
    "AWS::Partition": "aws",
    "EventStream": "trailwatch-EventStream-AbCdEf123456",
    "EventQueue": "https://sqs.us-east-1.amazonaws.com/999999999999/trailwatch-EventQueue-AbCdEf123456",
    "TrailFilesQueue": "https://sqs.us-east-1.amazonaws.com/999999999999/trailwatch-TrailFilesQueue-AbCdEf1",
    "CheckpointTable": "trailwatch-CheckpointTable-AbCdEf123456",
    "LeaseTable": "trailwatch-LeaseTable-AbCdEf123456",
    "RekeyStream": "trailwatch-RekeyStream-AbCdEf123456",
    "RekeyLeaseTable": "trailwatch-RekeyLeaseTable-AbCdEf123456",
    "StateBucket": "trailwatch-statebucket-abcdef123456",
    "Cluster": "trailwatch-Cluster-AbCdEf123456",
    "PrometheusWorkspace.PrometheusEndpoint": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-0123abcd-4567-89ef-0123-456789abcdef/",
    "FindingsImportRoleName": "TrailwatchFindingsImport",
    "ReportTo": "event-account",
    "FindingsRegion": "eu-west-1",
    "RulesConfigToml": '[rules.placeholders]\norg_accounts = ["111111111111", "222222222222"]\n',
    "SecurityLakeBucketName": "aws-security-data-lake-us-east-1-abcdef123456",
    "SecurityLakeRoleArn": "arn:aws:iam::999999999999:role/AmazonSecurityLake-Provider-trailwatch-us-east-1",
    "SecurityLakeExternalId": "trailwatch-lake",
    "SecurityLakeKeyPrefix": "ext/trailwatch/1.0",
    "SecurityLakeRegion": "eu-west-1",
}

# Sections the service plan (issue 8) defines and the stack must generate.
REQUIRED = {"aws", "service", "sources", "checkpoints", "sinks", "findings", "metrics", "telemetry"}

# Conditions of the template the checks below look at.
METRICS, TRACES, LEASED = "EnablePrometheus", "EnableXRay", "Leased"
LAKE, REKEYED = "SecurityLake", "Rekeyed"

# Base conditions whose every combination `trailwatch config` checks (the
# others only add or drop a line; they are checked all false and all true).
MAJOR = {"Leased", "RekeyWanted", "EnableXRay", "HasTrailBucket", "SecurityLake"}

# TraceSampleRatio values its AllowedPattern must let through (each must be
# a TOML number from 0 to 1) and must refuse.
RATIOS_ALLOWED = ["0", "1", "0.01", "0.5", "1.0", "0.000001"]
RATIOS_REFUSED = [".5", "1.5", "2", "5e-1", "-0", "0.", "1.01", ""]

LOGIC = {"Fn::Or", "Fn::And", "Fn::Not"}


class Unresolved(Exception):
    pass


class Conditions(dict):
    """Values of the parameter-driven conditions of one variant; a condition
    made only of other conditions (Fn::Or/And/Not) is decided from them, and
    one the variant does not vary is false."""

    def __init__(self, values, defs):
        super().__init__(values)
        self.defs = defs

    def __missing__(self, name):
        node = self.defs[name]
        return self.logic(node) if composed(node) else False

    def logic(self, node):
        (fn, arg), = node.items()
        if fn == "Condition":
            return self[arg]
        if fn == "Fn::Not":
            return not self.logic(arg[0])
        values = [self.logic(a) for a in arg]
        return any(values) if fn == "Fn::Or" else all(values)


def composed(node):
    """True when a condition is only a combination of other conditions."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    (fn, arg), = node.items()
    if fn == "Condition":
        return True
    return fn in LOGIC and all(composed(a) for a in arg)


def base_conditions(name, defs, found):
    """The parameter-driven conditions that decide `name`."""
    node = defs[name]
    if not composed(node):
        found.add(name)
        return found

    def walk(n):
        (fn, arg), = n.items()
        if fn == "Condition":
            base_conditions(arg, defs, found)
        else:
            for a in arg:
                walk(a)

    walk(node)
    return found


def evaluate(node, conditions, names):
    """Evaluate the intrinsic functions the config values use."""
    if isinstance(node, dict) and len(node) == 1:
        (fn, arg), = node.items()
        if fn == "Fn::Join":
            return arg[0].join(evaluate(part, conditions, names) for part in arg[1])
        if fn == "Fn::Sub":
            text, local = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
            local = {k: evaluate(v, conditions, names) for k, v in local.items()}

            def sub(m):
                key = m.group(1)
                if key in local:
                    return local[key]
                if key in names:
                    return names[key]
                raise Unresolved(f"${{{key}}} has no value")

            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        if fn == "Fn::If":
            return evaluate(arg[1] if conditions[arg[0]] else arg[2], conditions, names)
        if fn == "Ref":
            if arg not in names:
                raise Unresolved(f"Ref {arg} has no value")
            return names[arg]
        raise Unresolved(f"unsupported function {fn}")
    if isinstance(node, str):
        return node
    raise Unresolved(f"unexpected node {node!r}")


def conditions_used(node, found):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "Fn::If":
                found.add(v[0])
            conditions_used(v, found)
    elif isinstance(node, list):
        for v in node:
            conditions_used(v, found)
    return found


def variants(used, defs):
    """(label, Conditions) for every combination of the base conditions."""
    base = sorted(set().union(*(base_conditions(c, defs, set()) for c in used)) if used else set())
    for combo in itertools.product([False, True], repeat=len(base)):
        values = dict(zip(base, combo))
        label = ", ".join(f"{c}={v}" for c, v in values.items()) or "no conditions"
        yield label, Conditions(values, defs)


def check_service(config, conditions):
    """Problems of a rendered service configuration."""
    problems = []
    missing = REQUIRED - config.keys()
    if missing:
        problems.append(f"missing sections {sorted(missing)}")
    telemetry = config.get("telemetry", {})
    if conditions[TRACES]:
        if telemetry.get("trace_id_format") != "xray":
            problems.append("traces go to X-Ray without trace_id_format = \"xray\"")
        ratio = telemetry.get("trace_sample_ratio")
        if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            problems.append(f"trace_sample_ratio {ratio!r} is not a number from 0 to 1")
        if not telemetry.get("otlp_endpoint"):
            problems.append("traces enabled but no [telemetry] otlp_endpoint")
    elif "otlp_endpoint" in telemetry:
        problems.append("traces disabled but [telemetry] otlp_endpoint is set")
    # N tasks share the stream only through leases, each with its own state
    # (the service refuses the dynamodb checkpoint store with leases).
    kinesis = section(config, "sources", "org_trail")
    checkpoints = config.get("checkpoints", {})
    spool = section(config, "sinks", "securityhub").get("spool_durable")
    if conditions[LEASED]:
        if kinesis.get("coordination") != "leases" or not kinesis.get("lease_table"):
            problems.append("leases: the Kinesis source has no coordination = \"leases\" and lease_table")
        if checkpoints.get("store") != "file" or not checkpoints.get("snapshot_bucket"):
            problems.append("leases: [checkpoints] must be the file store, with a snapshot_bucket for large shard states")
        if spool is not False or config.get("service", {}).get("state_dir") == "/var/lib/trailwatch":
            problems.append("leases: each task's state_dir is task storage (not the shared EFS) and the spool not durable")
    else:
        if "coordination" in kinesis or checkpoints.get("store") != "dynamodb" or spool is not True:
            problems.append("single: dynamodb checkpoints, no leases, durable spool on EFS expected")
    # The re-keyed stream: a leased source of its own, with its own lease
    # table (a lease table holds one stream's shards, keyed by shard id).
    rekey, rekeyed = config.get("rekey", {}), section(config, "sources", "rekeyed")
    if conditions[REKEYED]:
        if rekey.get("source") != "rekeyed" or rekeyed.get("type") != "kinesis":
            problems.append("rekey: [rekey] source must name the kinesis source [sources.rekeyed]")
        if rekeyed.get("coordination") != "leases" or not rekeyed.get("lease_table"):
            problems.append("rekey: [sources.rekeyed] needs coordination = \"leases\" and a lease_table")
        if not rekeyed.get("stream_name") or rekeyed.get("stream_name") == kinesis.get("stream_name"):
            problems.append("rekey: [sources.rekeyed] must read a stream of its own")
        if rekeyed.get("lease_table") == kinesis.get("lease_table"):
            problems.append("rekey: the re-keyed stream shares the principal stream's lease table")
        if rekeyed.get("failover_time") != kinesis.get("failover_time"):
            problems.append("rekey: the two streams' failover_time differ")
    elif rekey or rekeyed:
        problems.append("no re-keyed stream, but [rekey] or [sources.rekeyed] is set")
    lake = section(config, "sinks", "security_lake")
    if conditions[LAKE]:
        if lake.get("type") != "security-lake":
            problems.append("EnableSecurityLake without a [sinks.security_lake] of type security-lake")
        for key in ("bucket", "source_name", "role_arn", "region"):
            if not lake.get(key):
                problems.append(f"[sinks.security_lake] has no {key}")
        for key, cond in (("external_id", "HasSecurityLakeExternalId"), ("prefix", "HasSecurityLakeKeyPrefix")):
            if (key in lake) != conditions[cond]:
                problems.append(f"[sinks.security_lake] {key} {'missing' if conditions[cond] else 'set'}")
        if "prefix" in lake and (lake["prefix"].startswith("/") or lake["prefix"].endswith("/")):
            problems.append("[sinks.security_lake] prefix must not start or end with '/'")
    elif lake:
        problems.append("Security Lake disabled but [sinks.security_lake] is set")
    return problems


def port_of(address):
    return urlsplit(address if "://" in address else f"//{address}").port


def section(d, *keys):
    """d[k1][k2]..., or {} where a level is missing or empty."""
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d or {}


def check_collector(collector, service, conditions):
    """Problems of a rendered collector configuration, given the service
    configuration rendered with the same conditions."""
    problems = []
    want = {p for p, on in (("metrics", conditions[METRICS]), ("traces", conditions[TRACES])) if on}
    pipelines = section(collector, "service", "pipelines")
    if set(pipelines) != want:
        problems.append(f"pipelines {sorted(pipelines)}, expected {sorted(want)}")
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for name, p in pipelines.items():
        for kind in used:
            for c in section(p, kind):
                used[kind].add(c)
                if c not in section(collector, kind):
                    problems.append(f"pipeline {name} names {kind} {c}, which is not defined")
    used["extensions"] = set(section(collector, "service", "extensions"))
    for kind, names in used.items():
        defined = set(section(collector, kind))
        if defined - names:
            problems.append(f"{kind} {sorted(defined - names)} defined but not used")
        if kind == "extensions" and names - defined:
            problems.append(f"extensions {sorted(names - defined)} used but not defined")
    if "traces" in pipelines:
        endpoint = service["telemetry"].get("otlp_endpoint", "")
        listen = section(collector, "receivers", "otlp", "protocols", "http").get("endpoint", "")
        if urlsplit(endpoint).netloc != listen:
            problems.append(f"the OTLP receiver listens on {listen!r}, trailwatch sends to {endpoint!r}")
        if "awsxray" not in section(pipelines, "traces", "exporters"):
            problems.append("the traces pipeline does not export to X-Ray (awsxray)")
    if "metrics" in pipelines:
        targets = [
            t
            for job in section(collector, "receivers", "prometheus", "config", "scrape_configs")
            for sc in section(job, "static_configs")
            for t in section(sc, "targets")
        ]
        listen = service["metrics"]["listen"]
        if [port_of(t) for t in targets] != [port_of(listen)]:
            problems.append(f"scrape targets {targets} do not match [metrics] listen {listen!r}")
    return problems


def trailwatch_config(binary, text):
    """(accepted, stderr) of `trailwatch config` on a rendered configuration,
    with no TRAILWATCH_* or OTEL_* variables of the caller's in the way."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAILWATCH", "OTEL_", "AWS_"))}
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    try:
        out = subprocess.run(
            [binary, "config", "--config", f.name], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        os.unlink(f.name)
    return out.returncode == 0, out.stderr.strip()


def check_with_trailwatch(binary, text, conditions, render_builtin_off):
    """Problems `trailwatch config` finds in a rendered configuration, and a
    one-line account of what it said."""
    ok, err = trailwatch_config(binary, text)
    last = err.splitlines()[-1] if err else ""
    if conditions[LEASED] and not conditions[REKEYED]:
        # The stack's queues are read without leases next to the leased
        # stream, so every pack correlation needs the re-keyed stream:
        # refused, by name.
        if ok or "[rekey]" not in err or "these would be split across instances:" not in err:
            return [f"leases without the re-keyed stream: expected the pack's correlations refused, got: {last}"], last
        ok2, err2 = trailwatch_config(binary, render_builtin_off())
        if not ok2:
            return [f"leases without the re-keyed stream and builtin = false refused: {err2}"], last
        return [], "refused as expected (pack correlations and unleased queues); accepted with builtin = false"
    if not ok:
        return [f"trailwatch config refused it: {err}"], last
    if conditions[REKEYED] and "re-keyed)" not in last:
        return [f"re-keyed stream configured but no correlation re-keyed: {last}"], last
    return [], last


def merged(a, b):
    """Deep merge of two collector configurations (lists must agree)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: merged(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in a.keys() | b.keys()}
    if a != b:
        raise Unresolved(f"{a!r} and {b!r} conflict")
    return a


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print each rendered service configuration")
    ap.add_argument("--print-collector", action="store_true", help="print each rendered collector configuration")
    ap.add_argument("--rules-toml", type=Path, help="use this file as the RulesConfigToml parameter")
    ap.add_argument("--trailwatch", help="trailwatch binary: check the major combinations with `trailwatch config`")
    args = ap.parse_args()

    template, matches = decode(str(TEMPLATE))
    if template is None:
        sys.exit(f"{TEMPLATE}: cannot be read: {matches}")
    names = dict(EXAMPLE)
    for param, spec in template["Parameters"].items():
        if "Default" in spec:
            names.setdefault(param, str(spec["Default"]))
    if args.rules_toml:
        names["RulesConfigToml"] = args.rules_toml.read_text()
    defs = template["Conditions"]
    value = template["Resources"]["ConfigParameter"]["Properties"]["Value"]
    failed = False

    def fail(label, message):
        nonlocal failed
        print(f"render-config: {label}: {message}", file=sys.stderr)
        failed = True

    def render_service(conditions, label, ratio=None, extra=None):
        try:
            text = evaluate(
                value, conditions, dict(names, **({"TraceSampleRatio": ratio} if ratio else {}), **(extra or {}))
            )
            return text, tomllib.loads(text)
        except (Unresolved, tomllib.TOMLDecodeError) as e:
            fail(label, e)
            return None, None

    for label, conditions in variants(conditions_used(value, set()), defs):
        text, config = render_service(conditions, label)
        if config is None:
            continue
        for problem in check_service(config, conditions):
            fail(label, problem)
        if len(text.encode()) > 8192:
            fail(label, f"{len(text.encode())} bytes, over the SSM limit of 8 KB")
        if args.print:
            print(f"# --- {label}\n{text}")
        print(f"render-config: {label}: ok ({len(text.encode())} bytes, sources {sorted(config['sources'])})")
        minor = {v for c, v in conditions.items() if c not in MAJOR}
        if args.trailwatch and len(minor) <= 1:
            builtin_off = {"RulesConfigToml": "[rules]\nbuiltin = false\n" + names["RulesConfigToml"]}
            problems, said = check_with_trailwatch(
                args.trailwatch, text, conditions, lambda: render_service(conditions, label, extra=builtin_off)[0]
            )
            for problem in problems:
                fail(f"{label}: trailwatch config", problem)
            if not problems:
                print(f"render-config: {label}: trailwatch config: {said}")

    # Every TraceSampleRatio the parameter allows renders to a ratio trailwatch takes.
    pattern = template["Parameters"]["TraceSampleRatio"]["AllowedPattern"]
    for ratio in RATIOS_ALLOWED:
        label = f"TraceSampleRatio={ratio}"
        if not re.fullmatch(pattern, ratio):
            fail(label, "refused by the parameter's AllowedPattern")
            continue
        _, config = render_service(Conditions({TRACES: True}, defs), label, ratio)
        if config is not None:
            for problem in check_service(config, Conditions({TRACES: True}, defs)):
                fail(label, problem)
    for ratio in RATIOS_REFUSED:
        if re.fullmatch(pattern, ratio):
            fail(f"TraceSampleRatio={ratio!r}", "let through by the parameter's AllowedPattern")

    # The collector sidecar, in each combination of what it runs for.
    containers = template["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    [(run_if, container)] = [
        (c["Fn::If"][0], c["Fn::If"][1]) for c in containers if "Fn::If" in c and c["Fn::If"][1]["Name"] == "collector"
    ]
    [node] = [e["Value"] for e in container["Environment"] if e["Name"] == "AOT_CONFIG_CONTENT"]
    rendered = {}
    for label, conditions in variants(conditions_used(node, {run_if}), defs):
        label = f"collector, {label}"
        if not conditions[run_if]:
            print(f"render-config: {label}: ok (no collector)")
            continue
        try:
            text = evaluate(node, conditions, names)
            collector = yaml.safe_load(text)
        except (Unresolved, yaml.YAMLError) as e:
            fail(label, e)
            continue
        _, service = render_service(conditions, label)
        if service is None:
            continue
        for problem in check_collector(collector, service, conditions):
            fail(label, problem)
        rendered[(conditions[METRICS], conditions[TRACES])] = collector
        if args.print_collector:
            print(f"# --- {label}\n{text}")
        print(f"render-config: {label}: ok (pipelines {sorted(section(collector, 'service', 'pipelines'))})")
    # The three variants are written out in the template: the one with both
    # pipelines must be exactly the other two together.
    try:
        if merged(rendered[(True, False)], rendered[(False, True)]) != rendered[(True, True)]:
            fail("collector", "the metrics-and-traces configuration is not the metrics one and the traces one merged")
    except (KeyError, Unresolved) as e:
        fail("collector", f"cannot compare the variants: {e}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
