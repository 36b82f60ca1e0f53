"""Render the trailwatch configuration central.yaml writes to SSM, and check it.

The stack builds the service's TOML from Fn::Join / Fn::Sub / Fn::If pieces;
a typo there would only show when the task starts in AWS. This renders the
value for example resource names, once per combination of the conditions it
uses, and fails unless every ${...} resolved and the result parses as TOML
with the sections the service plan defines. Run by scripts/lint-deploy with the
.venv's Python (it reads the template with cfn-lint's YAML loader).

    .venv/bin/python deploy/render-config.py [--print] [--rules-toml FILE]
"""

import argparse
import itertools
import re
import sys
import tomllib
from pathlib import Path

from cfnlint.decode import decode

TEMPLATE = Path(__file__).parent / "cloudformation" / "central.yaml"

# What CloudFormation would substitute: pseudo parameters, parameter values
# and each resource's Ref, with plausible example values.
EXAMPLE = {
    "AWS::StackName": "trailwatch",
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "999999999999",
    "AWS::Partition": "aws",
    "EventStream": "trailwatch-EventStream-AbCdEf123456",
    "EventQueue": "https://sqs.us-east-1.amazonaws.com/999999999999/trailwatch-EventQueue-AbCdEf123456",
    "TrailFilesQueue": "https://sqs.us-east-1.amazonaws.com/999999999999/trailwatch-TrailFilesQueue-AbCdEf1",
    "CheckpointTable": "trailwatch-CheckpointTable-AbCdEf123456",
    "StateBucket": "trailwatch-statebucket-abcdef123456",
    "FindingsImportRoleName": "TrailwatchFindingsImport",
    "ReportTo": "event-account",
    "FindingsRegion": "eu-west-1",
    "RulesConfigToml": '[rules.placeholders]\norg_accounts = ["111111111111", "222222222222"]\n',
}

# Sections the service plan (issue 8) defines and the stack must generate.
REQUIRED = {"aws", "service", "sources", "checkpoints", "sinks", "findings", "metrics", "telemetry"}


class Unresolved(Exception):
    pass


def evaluate(node, conditions, names):
    """Evaluate the intrinsic functions the config value uses."""
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--print", action="store_true", help="print each rendered configuration")
    ap.add_argument("--rules-toml", type=Path, help="use this file as the RulesConfigToml parameter")
    args = ap.parse_args()

    names = dict(EXAMPLE)
    if args.rules_toml:
        names["RulesConfigToml"] = args.rules_toml.read_text()

    template, matches = decode(str(TEMPLATE))
    if template is None:
        sys.exit(f"{TEMPLATE}: cannot be read: {matches}")
    value = template["Resources"]["ConfigParameter"]["Properties"]["Value"]
    used = sorted(conditions_used(value, set()))

    failed = False
    for combo in itertools.product([False, True], repeat=len(used)):
        conditions = dict(zip(used, combo))
        label = ", ".join(f"{c}={v}" for c, v in conditions.items()) or "no conditions"
        try:
            text = evaluate(value, conditions, names)
            config = tomllib.loads(text)
        except (Unresolved, tomllib.TOMLDecodeError) as e:
            print(f"render-config: {label}: {e}", file=sys.stderr)
            failed = True
            continue
        missing = REQUIRED - config.keys()
        if missing:
            print(f"render-config: {label}: missing sections {sorted(missing)}", file=sys.stderr)
            failed = True
        if len(text.encode()) > 8192:
            print(f"render-config: {label}: {len(text.encode())} bytes, over the SSM limit of 8 KB", file=sys.stderr)
            failed = True
        if args.print:
            print(f"# --- {label}\n{text}")
        print(f"render-config: {label}: ok ({len(text.encode())} bytes, sources {sorted(config['sources'])})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
