#!/usr/bin/env python3
"""Structural checks of the Terraform in terraform/ over the parsed HCL (python-hcl2), the
project's own rules beside `terraform fmt -check` and checkov:

  1. every variable has a type and a description;
  2. no IAM policy grants the `*` action or a whole service (`s3:*`);
  3. every S3 bucket has a public access block with all four settings on, and a default
     encryption configuration;
  4. every CloudWatch log group has a retention;
  5. every example defines each output that README.md's deploy steps read
     (`terraform output [-raw|-json] NAME`), so those steps work whichever example is applied;
  6. a configuration that creates the HTTP API and the database also has CloudWatch alarms on
     the API's 5xx answers and on the database's connections;
  7. a configuration with an ECS service (the container deployment) gives each task an EBS
     volume (volume_configuration with managed_ebs_volume), sits behind a target group with
     stickiness on whose health check asks readiness, scales (an appautoscaling target), and
     has alarms on the queue's age and on the load balancer's 5xx answers;
  8. maintenance is scheduled: a configuration with Lambda functions has an EventBridge
     schedule whose input is a maintenance event (stowage_maintenance), and one with an ECS
     service gives its tasks a garbage-collection interval (interval_secs in their config).

Usage: structure.py [DIR]   (default: the terraform/ directory this file is in)
       structure.py --self-test   (proves each rule fails on a bad sample)
Exit status 1 with one line per problem when a rule is broken.
"""

import re
import sys
from pathlib import Path

import hcl2


def unquote(value):
    """python-hcl2 keeps the quotes of labels and strings."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def blocks(parsed, kind):
    """(type, name, body) of each `resource`/`data` block, or (name, body) of `variable`s."""
    for entry in parsed.get(kind, []):
        for label, body in entry.items():
            if kind == "variable":
                yield unquote(label), body
            else:
                for name, inner in body.items():
                    yield unquote(label), unquote(name), inner


def first(body, key):
    """An attribute's value; this python-hcl2 wraps each one in a one-element list."""
    value = body.get(key)
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def leaves(value, path=()):
    """(key path, string) of every string inside a parsed value."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, path + (unquote(k),))
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v, path)
    elif isinstance(value, str):
        yield path, unquote(value)


def wildcard_action(path, text):
    """`*` under an actions key, or a whole service (`s3:*`) anywhere (locals included)."""
    in_actions = any(k.lower() in ("actions", "action", "not_actions", "notaction") for k in path)
    if in_actions and text == "*":
        return True
    head, sep, tail = text.partition(":")
    return sep == ":" and tail == "*" and head.replace("-", "").isalnum() and head.islower()


def check(files):
    """files: {name: parsed HCL}. Returns a list of problems."""
    problems = []
    resources = []
    for name, parsed in files.items():
        for var, body in blocks(parsed, "variable"):
            for field in ("type", "description"):
                if field not in body:
                    problems.append(f"{name}: variable {var} has no {field}")
        for kind in ("resource", "data"):
            for rtype, rname, body in blocks(parsed, kind):
                resources.append((name, kind, rtype, rname, body))
        for path, text in leaves(parsed):
            if wildcard_action(path, text):
                problems.append(f"{name}: {'.'.join(path[:4])} grants the action {text!r}")

    for name, kind, rtype, rname, body in resources:
        if kind == "resource" and rtype == "aws_cloudwatch_log_group" and "retention_in_days" not in body:
            problems.append(f"{name}: aws_cloudwatch_log_group.{rname} has no retention_in_days")

    def referencing(rtype, bucket):
        ref = f"aws_s3_bucket.{bucket}"
        return [
            body
            for _, kind, t, _, body in resources
            if kind == "resource" and t == rtype and (ref in str(first(body, "bucket")) or ref in str(first(body, "for_each")))
        ]

    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    for name, kind, rtype, rname, body in resources:
        if kind != "resource" or rtype != "aws_s3_bucket":
            continue
        access_blocks = referencing("aws_s3_bucket_public_access_block", rname)
        if not access_blocks:
            problems.append(f"{name}: aws_s3_bucket.{rname} has no aws_s3_bucket_public_access_block")
        for b in access_blocks:
            off = [f for f in flags if first(b, f) is not True]
            if off:
                problems.append(f"{name}: the public access block of aws_s3_bucket.{rname} does not set {', '.join(off)} = true")
        if not referencing("aws_s3_bucket_server_side_encryption_configuration", rname):
            problems.append(f"{name}: aws_s3_bucket.{rname} has no aws_s3_bucket_server_side_encryption_configuration")

    types = {rtype for _, kind, rtype, _, _ in resources if kind == "resource"}
    alarmed = {
        unquote(first(body, "metric_name"))
        for _, kind, rtype, _, body in resources
        if kind == "resource" and rtype == "aws_cloudwatch_metric_alarm"
    }
    for creates, metric in (
        ("aws_apigatewayv2_api", "5xx"),
        ("aws_rds_cluster", "DatabaseConnections"),
        ("aws_lb", "HTTPCode_Target_5XX_Count"),
        ("aws_ecs_service", "stowage_queue_oldest_age_seconds"),
    ):
        if creates in types and metric not in alarmed:
            problems.append(f"{creates} is created with no aws_cloudwatch_metric_alarm on {metric}")
    problems += check_container(resources, types)
    problems += check_schedules(files, resources, types)
    return problems


def of_type(resources, rtype):
    return [(rname, body) for _, kind, t, rname, body in resources if kind == "resource" and t == rtype]


def check_container(resources, types):
    """Rule 7: the container deployment's EBS volumes, stickiness, readiness and scaling."""
    problems = []
    services = of_type(resources, "aws_ecs_service")
    for rname, body in services:
        volume = first(body, "volume_configuration")
        if not isinstance(volume, dict) or not first(volume, "managed_ebs_volume"):
            problems.append(f"aws_ecs_service.{rname} gives its tasks no EBS volume (volume_configuration with managed_ebs_volume)")
        if not first(body, "load_balancer"):
            problems.append(f"aws_ecs_service.{rname} is behind no load balancer")
    if not services:
        return problems
    groups = of_type(resources, "aws_lb_target_group")
    sticky = [
        rname for rname, body in groups
        if isinstance(first(body, "stickiness"), dict) and first(first(body, "stickiness"), "enabled") is True
    ]
    ready = [
        rname for rname, body in groups
        if isinstance(first(body, "health_check"), dict)
        and unquote(first(first(body, "health_check"), "path")) == "/api/v1/system/readiness"
    ]
    if not sticky:
        problems.append("an ECS service is created with no aws_lb_target_group that has stickiness enabled")
    if not ready:
        problems.append("an ECS service is created with no aws_lb_target_group whose health check asks /api/v1/system/readiness")
    scaling = [body for _, body in of_type(resources, "aws_appautoscaling_target") if unquote(first(body, "service_namespace")) == "ecs"]
    if not scaling:
        problems.append("an ECS service is created with no aws_appautoscaling_target (service_namespace = \"ecs\")")
    return problems


def check_schedules(files, resources, types):
    """Rule 8: scheduled garbage collection for each kind of deployment."""
    problems = []
    if "aws_lambda_function" in types:
        inputs = [
            text
            for _, body in of_type(resources, "aws_scheduler_schedule")
            for path, text in leaves(first(body, "target") or {})
            if path[-1:] == ("input",)
        ]
        if not any("stowage_maintenance" in text for text in inputs):
            problems.append("Lambda functions are created with no aws_scheduler_schedule whose input is a maintenance event (stowage_maintenance)")
    if "aws_ecs_service" in types:
        configured = any(
            re.search(r"interval_secs\s*=", text)
            for parsed in files.values()
            for entry in parsed.get("locals", [])
            for _, text in leaves(entry)
        )
        if not configured:
            problems.append("an ECS service is created whose tasks get no [gc] interval_secs in their configuration")
    return problems


def readme_outputs(text):
    """The outputs a README reads with `terraform output [-raw|-json] NAME`."""
    return sorted(set(re.findall(r"terraform output(?:\s+-(?:raw|json))?\s+([A-Za-z_][A-Za-z0-9_]*)", text)))


def check_examples(readme, files):
    """Rule 5. readme: README.md's text; files as in check(). Returns a list of problems."""
    examples = {}
    for name, parsed in files.items():
        parts = Path(name).parts
        if len(parts) >= 3 and parts[0] == "examples":
            defined = examples.setdefault(parts[1], set())
            for entry in parsed.get("output", []):
                defined.update(unquote(label) for label in entry)
    return [
        f"examples/{example}: no output {wanted!r}, which README.md reads (terraform output {wanted})"
        for example, defined in sorted(examples.items())
        for wanted in readme_outputs(readme)
        if wanted not in defined
    ]


def load_dir(root):
    files = {}
    for path in sorted(root.rglob("*.tf")):
        if ".terraform" in path.parts:
            continue
        with path.open() as f:
            try:
                files[str(path.relative_to(root))] = hcl2.load(f)
            except Exception as e:  # a syntax error is a failure, never a skip
                print(f"{path}: does not parse: {e}", file=sys.stderr)
                sys.exit(1)
    return files


BAD = {
    "untyped.tf": 'variable "x" {\n  default = 1\n}\n',
    "star.tf": 'locals {\n  acts = ["s3:*"]\n}\ndata "aws_iam_policy_document" "p" {\n  statement {\n    actions   = ["*"]\n    resources = ["arn:aws:s3:::b/*"]\n  }\n}\n',
    "open.tf": 'resource "aws_s3_bucket" "b" {\n  bucket = "b"\n}\nresource "aws_s3_bucket_public_access_block" "b" {\n  bucket = aws_s3_bucket.b.id\n  block_public_acls = true\n}\n',
    "logs.tf": 'resource "aws_cloudwatch_log_group" "g" {\n  name = "g"\n}\n',
    "unwatched.tf": 'resource "aws_apigatewayv2_api" "a" {\n  name = "a"\n}\nresource "aws_rds_cluster" "d" {\n  engine = "aurora-postgresql"\n}\n',
    "container.tf": (
        'resource "aws_ecs_service" "s" {\n  name = "s"\n}\n'
        'resource "aws_lb" "l" {\n  name = "l"\n}\n'
        'resource "aws_lb_target_group" "t" {\n  port = 8081\n  health_check {\n    path = "/api/system/ping"\n  }\n'
        '  stickiness {\n    enabled = false\n    type = "lb_cookie"\n  }\n}\n'
    ),
    "unscheduled.tf": 'resource "aws_lambda_function" "f" {\n  function_name = "f"\n}\nresource "aws_scheduler_schedule" "s" {\n  target {\n    input = "{}"\n  }\n}\n',
}


def self_test():
    expected = {
        "untyped.tf": ["variable x has no type", "variable x has no description"],
        "star.tf": ["grants the action 's3:*'", "grants the action '*'"],
        "open.tf": ["does not set block_public_policy", "has no aws_s3_bucket_server_side_encryption_configuration"],
        "logs.tf": ["has no retention_in_days"],
        "unwatched.tf": ["no aws_cloudwatch_metric_alarm on 5xx", "no aws_cloudwatch_metric_alarm on DatabaseConnections"],
        "container.tf": [
            "gives its tasks no EBS volume",
            "is behind no load balancer",
            "that has stickiness enabled",
            "asks /api/v1/system/readiness",
            "no aws_appautoscaling_target",
            "no aws_cloudwatch_metric_alarm on HTTPCode_Target_5XX_Count",
            "no aws_cloudwatch_metric_alarm on stowage_queue_oldest_age_seconds",
            "no [gc] interval_secs",
        ],
        "unscheduled.tf": ["no aws_scheduler_schedule whose input is a maintenance event"],
    }
    failed = False
    readme = "API=$(terraform output -raw api_url)\nterraform output -json bucket_names\n"
    example = {"examples/x/main.tf": hcl2.loads('output "api_url" {\n  value = 1\n}\n')}
    problems = check_examples(readme, example)
    if problems != ["examples/x: no output 'bucket_names', which README.md reads (terraform output bucket_names)"]:
        print(f"self-test: a missing example output should be reported, got {problems}", file=sys.stderr)
        failed = True
    for name, text in BAD.items():
        problems = check({name: hcl2.loads(text)})
        for want in expected[name]:
            if not any(want in p for p in problems):
                print(f"self-test: {name} should report {want!r}, got {problems}", file=sys.stderr)
                failed = True
    print("structure self-test:", "FAILED" if failed else "every rule catches its bad sample")
    return 1 if failed else 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    files = load_dir(root)
    problems = check(files)
    readme = root.parent / "README.md"
    if readme.is_file():
        problems += check_examples(readme.read_text(), files)
    for p in problems:
        print(p, file=sys.stderr)
    print(f"structure: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
