"""deploy/nudged.yaml: current, lint-clean, deployable, and what provision_aws creates.

The tests read the committed template as an operator's tools would, and compare it with what
`provision_aws` and moto's CloudFormation create; none reuses the code that writes it.
"""

import json
import os
import re
import subprocess
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import jmespath
import pytest
import yaml
from django.conf import settings
from django.core.management import CommandError, call_command

from factory_bridge import aws as aws_clients
from factory_bridge.tools.cloudformation import render_template
from factory_bridge.tools.provisioning import provision

TEMPLATE = Path(settings.BASE_DIR) / "deploy" / "nudged.yaml"
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
ACCOUNT = "123456789012"  # moto's account
# What only AWS has: provision_aws does not create these, and locally nothing needs them.
AWS_ONLY_TYPES = {
    "AWS::CloudWatch::Alarm",
    "AWS::IAM::ManagedPolicy",
    "AWS::ElastiCache::ServerlessCache",
}
AWS_ONLY_RESOURCES = {"AlarmTopic", "AlarmEmailSubscription"}
DEPLOY_DOC = Path(settings.BASE_DIR) / "docs" / "deploy.md"

# The app policy's actions per kind of queue.
FIND_AND_COUNT = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"]
CONSUME = ["sqs:DeleteMessage", *FIND_AND_COUNT, "sqs:ReceiveMessage", "sqs:SendMessage"]
CONSUME_AND_HOLD = ["sqs:ChangeMessageVisibility", *CONSUME]

# The code that runs on AWS, and the IAM action each of its boto3 calls needs (a batch call
# needs its single call's).
APPS = ("nudged", "shop", "inventory", "factory_bridge")
IAM_ACTIONS = {
    "receive_message": "sqs:ReceiveMessage",
    "delete_message": "sqs:DeleteMessage",
    "delete_message_batch": "sqs:DeleteMessage",
    "send_message": "sqs:SendMessage",
    "send_message_batch": "sqs:SendMessage",
    "change_message_visibility": "sqs:ChangeMessageVisibility",
    "change_message_visibility_batch": "sqs:ChangeMessageVisibility",
    "get_queue_attributes": "sqs:GetQueueAttributes",
    "get_queue_url": "sqs:GetQueueUrl",
    "publish": "sns:Publish",
    "publish_batch": "sns:Publish",
    "get_caller_identity": None,  # needs no permission
}


def environment_query() -> str:
    """The query docs/deploy.md gives to turn the stack's outputs into the app's environment."""
    match = re.search(r"--query '([^']+)'", DEPLOY_DOC.read_text(encoding="utf-8"))
    assert match, "docs/deploy.md shows no describe-stacks --query"
    return match[1]


def load_template() -> dict[str, Any]:
    return yaml.safe_load(TEMPLATE.read_text(encoding="utf-8"))


class Stack:
    """The committed template resolved for given parameters, as CloudFormation would."""

    def __init__(self, template: dict[str, Any], parameters: dict[str, Any]) -> None:
        self.template = template
        self.resources = template["Resources"]
        defaults = {k: p.get("Default") for k, p in template["Parameters"].items()}
        self.values: dict[str, Any] = {
            **defaults,
            **parameters,
            "AWS::Region": settings.AWS_DEFAULT_REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
        }

    def name(self, logical_id: str) -> str:
        properties = self.resources[logical_id]["Properties"]
        return self.resolve(properties.get("QueueName") or properties["TopicName"])

    def arn(self, logical_id: str) -> str:
        service = self.resources[logical_id]["Type"].split("::")[1].lower()
        region = settings.AWS_DEFAULT_REGION
        return f"arn:aws:{service}:{region}:{ACCOUNT}:{self.name(logical_id)}"

    def ref(self, name: str) -> Any:
        if name in self.values:
            return self.values[name]
        kind = self.resources[name]["Type"]
        assert kind in {"AWS::SNS::Topic", "AWS::SQS::Queue"}, f"no Ref for {kind} here"
        return (
            self.arn(name) if kind == "AWS::SNS::Topic" else aws_clients.queue_url(self.name(name))
        )

    def get_att(self, logical_id: str, attribute: str) -> str:
        return {"Arn": self.arn, "QueueName": self.name, "TopicName": self.name}[attribute](
            logical_id
        )

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"}:
            return self.ref(value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            return self.get_att(*value["Fn::GetAtt"])
        if set(value) == {"Fn::Sub"}:
            return re.sub(
                r"\$\{([\w:]+)(?:\.(\w+))?\}",
                lambda m: str(self.get_att(*m.groups()) if m[2] else self.ref(m[1])),
                value["Fn::Sub"],
            )
        return {k: self.resolve(v) for k, v in value.items()}


def moto_queues() -> dict[str, dict[str, str]]:
    sqs = aws_clients.client("sqs")
    return {
        url.rsplit("/", 1)[-1]: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])[
            "Attributes"
        ]
        for url in sqs.list_queues().get("QueueUrls", [])
    }


def moto_topics() -> set[str]:
    return {t["TopicArn"] for t in aws_clients.client("sns").list_topics()["Topics"]}


def moto_subscriptions() -> dict[tuple[str, str], dict[str, str]]:
    """{(topic ARN, queue ARN): attributes} of every SQS subscription."""
    sns = aws_clients.client("sns")
    return {
        (s["TopicArn"], s["Endpoint"]): sns.get_subscription_attributes(
            SubscriptionArn=s["SubscriptionArn"]
        )["Attributes"]
        for s in sns.list_subscriptions()["Subscriptions"]
        if s["Protocol"] == "sqs"
    }


def parameters_from_settings(template: dict[str, Any]) -> dict[str, Any]:
    """The template parameters that stand for settings, read from the outputs that name them."""
    return {
        output["Value"]["Ref"]: getattr(settings, output["Description"])
        for output in template["Outputs"].values()
        if set(output["Value"]) == {"Ref"} and output["Value"]["Ref"] in template["Parameters"]
    }


def test_committed_template_is_the_one_the_declaration_writes():
    assert TEMPLATE.read_text(encoding="utf-8") == render_template(), (
        "deploy/nudged.yaml is out of date: run `python manage.py aws_template`"
    )


def test_command_writes_the_template(tmp_path):
    target = tmp_path / "stack.yaml"
    out = StringIO()

    call_command("aws_template", "--output", str(target), stdout=out)

    assert target.read_text(encoding="utf-8") == TEMPLATE.read_text(encoding="utf-8")
    assert out.getvalue() == f"Wrote {target}\n"


def test_command_prints_the_template_with_a_dash():
    out = StringIO()

    call_command("aws_template", "--output", "-", stdout=out)

    assert out.getvalue() == TEMPLATE.read_text(encoding="utf-8")


def test_command_with_an_unwritable_path_raises_command_error(tmp_path):
    target = tmp_path / "missing" / "stack.yaml"

    with pytest.raises(CommandError, match=f"Could not write {target}: No such file"):
        call_command("aws_template", "--output", str(target), stdout=StringIO())


def run_cfn_lint(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CFN_LINT), "--regions", settings.AWS_DEFAULT_REGION, "us-east-1", "--", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cfn_lint_passes_on_the_template():
    finished = run_cfn_lint(TEMPLATE)

    assert (finished.returncode, finished.stdout, finished.stderr) == (0, "", "")


def test_cfn_lint_catches_a_wrong_property(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("Statistic: Maximum", "Statistic: Biggest", 1))

    finished = run_cfn_lint(broken)

    assert finished.returncode != 0
    assert "Biggest" in finished.stdout


def test_template_defaults_are_the_apps_defaults():
    """With no parameter given, the stack has the names and numbers the app assumes unset."""
    template = load_template()
    stack = Stack(template, {})
    settings_of = {o["Description"]: o["Value"] for o in template["Outputs"].values()}
    names = [s for s in settings_of if s.startswith(("SNS_", "SQS_"))]
    code = (
        "import json; from nudged.settings import base; "
        f"print(json.dumps({{n: getattr(base, n) for n in {names!r}}}))"
    )
    clean = {"PATH": os.environ["PATH"]}

    finished = subprocess.run(
        [sys.executable, "-c", code],
        cwd=settings.BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    defaults = json.loads(finished.stdout)
    assert len(defaults) == 10
    for setting, default in defaults.items():
        value = settings_of[setting]
        if "Ref" in value:
            assert template["Parameters"][value["Ref"]]["Default"] == default, setting
        else:
            assert stack.resolve(value) == default, setting


def test_provision_aws_creates_every_resource_and_property_of_the_template(empty_moto, settings):
    settings.SQS_MAX_RECEIVE_COUNT = 7
    settings.SQS_VISIBILITY_TIMEOUT = 45
    settings.SQS_OPS_RETENTION = 600
    template = load_template()
    stack = Stack(template, parameters_from_settings(template))
    assert stack.values["MaxReceiveCount"] == 7

    provision()

    queues, topics, subscriptions = moto_queues(), moto_topics(), moto_subscriptions()
    compared = set()
    for logical_id, resource in stack.resources.items():
        kind, properties = resource["Type"], resource["Properties"]
        if kind in AWS_ONLY_TYPES or logical_id in AWS_ONLY_RESOURCES:
            continue
        compared.add(logical_id)
        if kind == "AWS::SNS::Topic":
            assert stack.arn(logical_id) in topics
        elif kind == "AWS::SQS::Queue":
            attributes = queues[stack.name(logical_id)]
            for name, value in properties.items():
                if name == "QueueName":
                    continue
                if name == "RedriveAllowPolicy":
                    # moto accepts it and never reports it (nor knows its name in a request).
                    continue
                if name == "RedrivePolicy":
                    assert json.loads(attributes[name]) == stack.resolve(value), logical_id
                else:
                    assert attributes[name] == str(stack.resolve(value)), (logical_id, name)
        elif kind == "AWS::SQS::QueuePolicy":
            for url in stack.resolve(properties["Queues"]):
                policy = json.loads(queues[url.rsplit("/", 1)[-1]]["Policy"])
                assert policy == stack.resolve(properties["PolicyDocument"]), logical_id
        elif kind == "AWS::SNS::Subscription":
            assert properties["Protocol"] == "sqs"
            key = (stack.resolve(properties["TopicArn"]), stack.resolve(properties["Endpoint"]))
            attributes = subscriptions[key]
            assert attributes["RawMessageDelivery"] == str(properties["RawMessageDelivery"]).lower()
            if "FilterPolicy" in properties:
                assert json.loads(attributes["FilterPolicy"]) == properties["FilterPolicy"]
                assert attributes["FilterPolicyScope"] == properties["FilterPolicyScope"]
            else:
                assert not attributes.get("FilterPolicy"), logical_id
        else:
            pytest.fail(f"{logical_id}: {kind} is neither compared nor AWS-only")
    kinds = {stack.resources[i]["Type"] for i in compared}
    count = {k: sum(stack.resources[i]["Type"] == k for i in compared) for k in kinds}
    assert len(topics) == count["AWS::SNS::Topic"] == 2
    assert len(queues) == count["AWS::SQS::Queue"] == 5
    assert len(subscriptions) == count["AWS::SNS::Subscription"] == 4
    assert sum("Policy" in a for a in queues.values()) == count["AWS::SQS::QueuePolicy"] == 3


@pytest.fixture
def app_role(empty_moto: str) -> str:
    iam = aws_clients.client("iam")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    iam.create_role(RoleName="nudged-app", AssumeRolePolicyDocument=json.dumps(trust))
    return "nudged-app"


def test_template_deploys_to_moto(app_role):
    """moto creates the topics, the queues with their redrive policies and the IAM policy.

    moto's CloudFormation skips AWS::SNS::Subscription, AWS::SQS::QueuePolicy and
    AWS::CloudWatch::Alarm (it logs "No Moto CloudFormation support" and marks them
    complete), so only the rest is asserted here; the test above holds provision_aws, which
    creates subscriptions and queue policies, to the template.
    """
    cloudformation = aws_clients.client("cloudformation")
    parameters = {
        "Prefix": "stack",
        "MaxReceiveCount": "7",
        "VisibilityTimeout": "45",
        "OpsRetention": "600",
        "AppRoleName": app_role,
    }

    cloudformation.create_stack(
        StackName="nudged",
        TemplateBody=TEMPLATE.read_text(encoding="utf-8"),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_IAM"],
    )

    described = cloudformation.describe_stacks(StackName="nudged")
    assert described["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"
    arn = f"arn:aws:sqs:{settings.AWS_DEFAULT_REGION}:{ACCOUNT}:stack-"
    topic = f"arn:aws:sns:{settings.AWS_DEFAULT_REGION}:{ACCOUNT}:stack-"
    assert moto_topics() == {f"{topic}stock-events", f"{topic}sales-events", f"{topic}alarms"}
    queues = moto_queues()
    assert set(queues) == {
        f"stack-{n}" for n in ("restock", "restock-dlq", "notify", "notify-dlq", "ops")
    }
    for source in ("restock", "notify"):
        attributes = queues[f"stack-{source}"]
        assert json.loads(attributes["RedrivePolicy"]) == {
            "deadLetterTargetArn": f"{arn}{source}-dlq",
            "maxReceiveCount": 7,
        }
        assert attributes["VisibilityTimeout"] == "45"
        assert attributes["MessageRetentionPeriod"] == "345600"
        assert queues[f"stack-{source}-dlq"]["MessageRetentionPeriod"] == "1209600"
        assert "RedrivePolicy" not in queues[f"stack-{source}-dlq"]
    assert queues["stack-ops"]["MessageRetentionPeriod"] == "600"

    outputs = {o["OutputKey"]: o["OutputValue"] for o in described["Stacks"][0]["Outputs"]}
    environment = jmespath.search(environment_query(), described)
    assert environment == [
        "SNS_STOCK_TOPIC=stack-stock-events",
        "SNS_SALES_TOPIC=stack-sales-events",
        "SQS_RESTOCK_DLQ=stack-restock-dlq",
        "SQS_RESTOCK_QUEUE=stack-restock",
        "SQS_NOTIFY_DLQ=stack-notify-dlq",
        "SQS_NOTIFY_QUEUE=stack-notify",
        "SQS_OPS_QUEUE=stack-ops",
        "SQS_MAX_RECEIVE_COUNT=7",
        "SQS_VISIBILITY_TIMEOUT=45",
        "SQS_OPS_RETENTION=600",
        f"AWS_DEFAULT_REGION={settings.AWS_DEFAULT_REGION}",
    ]
    assert outputs["AlarmTopicArn"] == f"{topic}alarms"

    iam = aws_clients.client("iam")
    attached = iam.list_attached_role_policies(RoleName=app_role)["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == [outputs["AppPolicyArn"]]
    policy = iam.get_policy(PolicyArn=outputs["AppPolicyArn"])["Policy"]
    document = iam.get_policy_version(
        PolicyArn=policy["Arn"], VersionId=policy["DefaultVersionId"]
    )["PolicyVersion"]["Document"]
    allowed = {(s["Sid"], json.dumps(s["Resource"])): s["Action"] for s in document["Statement"]}
    assert all(s["Effect"] == "Allow" for s in document["Statement"])
    assert allowed == {
        ("PublishEvents", json.dumps([f"{topic}stock-events", f"{topic}sales-events"])): (
            "sns:Publish"
        ),
        **{
            (sid, json.dumps(f"{arn}{name}")): actions
            for sid, name, actions in [
                ("RestockDeadLetterQueue", "restock-dlq", CONSUME_AND_HOLD),
                ("RestockQueue", "restock", CONSUME_AND_HOLD),
                ("NotifyDeadLetterQueue", "notify-dlq", CONSUME_AND_HOLD),
                ("NotifyQueue", "notify", CONSUME_AND_HOLD),
                ("OpsQueue", "ops", FIND_AND_COUNT),
            ]
        },
    }


def test_app_policy_allows_exactly_the_calls_the_app_makes():
    """Every SNS/SQS call outside provisioning (operators' credentials) is in the policy."""
    called = set()
    provisioning = Path(settings.BASE_DIR) / "factory_bridge" / "tools" / "provisioning.py"
    for app in APPS:
        for path in (Path(settings.BASE_DIR) / app).rglob("*.py"):
            if path == provisioning:
                continue
            source = path.read_text(encoding="utf-8")
            called |= set(re.findall(r'_call\(\s*"(\w+)"', source))
            called |= set(re.findall(r'\b(?:sns|sqs|client\("\w+"\))\.(\w+)\(', source))
    assert called - {"get_paginator"} <= set(IAM_ACTIONS), called
    statements = load_template()["Resources"]["AppPolicy"]["Properties"]["PolicyDocument"]
    allowed = set()
    for statement in statements["Statement"]:
        action = statement["Action"]
        allowed |= {action} if isinstance(action, str) else set(action)

    assert allowed == {IAM_ACTIONS[c] for c in called if IAM_ACTIONS.get(c)}
