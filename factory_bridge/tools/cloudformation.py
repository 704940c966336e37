"""The CloudFormation template of Nudged's AWS resources, written from their declaration.

Besides what `provision_aws` creates, the template holds what only AWS has: CloudWatch alarms
(dead letters, the restock queue's oldest message), the limit store (ElastiCache Serverless,
when given subnets) and the app role's IAM policy.
"""

from pathlib import Path
from typing import Any

import yaml
from django.conf import settings

from factory_bridge.infrastructure import (
    DEFAULT_PREFIX,
    FILTER_POLICY_SCOPE,
    MAX_RECEIVE_COUNT,
    PARAMETERS,
    QUEUES,
    RAW_MESSAGE_DELIVERY,
    SUBSCRIPTIONS,
    TOPICS,
    Parameter,
    Queue,
    Topic,
    sources_of,
    topics_of,
)
from factory_bridge.tools.policies import (
    filter_policy,
    queue_policy,
    redrive_allow_policy,
    redrive_policy,
)

HEADER = """\
# Nudged on AWS: topics, queues, dead-letter queues, subscriptions, queue policies, alarms and
# the app role's IAM policy. Written by `python manage.py aws_template` from
# factory_bridge/infrastructure.py, the declaration `provision_aws` applies: change that, then
# run the command; never edit this file by hand (a test compares the two).
"""
# The runbook every alarm points to.
RUNBOOK = "docs/operations.md#alarms-on-aws"
# Parameters only the template has.
AWS_ONLY_PARAMETERS: dict[str, dict[str, Any]] = {
    "MessageAgeAlarmSeconds": {
        "Type": "Number",
        "Default": 300,
        "MinValue": 60,
        "MaxValue": 1209600,
        "Description": "Seconds the oldest restock message may wait before it alarms "
        "(> MaxReceiveCount x VisibilityTimeout)",
    },
    "AlarmEmail": {
        "Type": "String",
        "Default": "",
        "Description": "Address subscribed to the alarm topic (empty: none)",
    },
    "CacheSubnetIds": {
        "Type": "CommaDelimitedList",
        "Default": "",
        "Description": "Subnets of the web hosts' VPC for the limit store, an ElastiCache "
        "Serverless cache (empty: none here; CACHE_URL names another Redis)",
    },
    "CacheSecurityGroupIds": {
        "Type": "CommaDelimitedList",
        "Default": "",
        "Description": "Security groups of the limit store, open to the web hosts on 6379 "
        "(empty: the VPC's default group)",
    },
    "AppRoleName": {
        "Type": "String",
        "Default": "",
        "Description": "Role of the web and worker hosts to attach the app policy to (empty: none)",
    },
}


def template_path() -> Path:
    """Where the template is committed."""
    return Path(settings.BASE_DIR) / "deploy" / "nudged.yaml"


class _Dumper(yaml.SafeDumper):
    """Writes a value used twice in full, never as an anchor and an alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render_template() -> str:
    """The template as YAML, intrinsic functions in their long form."""
    body = yaml.dump(
        build_template(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120
    )
    return HEADER + body


def build_template() -> dict[str, Any]:
    """The template as data: the declared resources, then the alarms and the app policy."""
    resources: dict[str, Any] = {}
    for topic in TOPICS:
        resources[topic.logical_id] = _resource("AWS::SNS::Topic", TopicName=_name(topic))
    for queue in QUEUES:
        resources[queue.logical_id] = _resource("AWS::SQS::Queue", **_queue_properties(queue))
        if topics := topics_of(queue):
            resources[f"{queue.logical_id}Policy"] = _resource(
                "AWS::SQS::QueuePolicy",
                Queues=[_ref(queue.logical_id)],
                PolicyDocument=queue_policy(
                    queue_arn=_arn(queue), topic_arns=[_ref(t.logical_id) for t in topics]
                ),
            )
    for subscription in SUBSCRIPTIONS:
        properties: dict[str, Any] = {
            "TopicArn": _ref(subscription.topic.logical_id),
            "Protocol": "sqs",
            "Endpoint": _arn(subscription.queue),
            "RawMessageDelivery": RAW_MESSAGE_DELIVERY,
        }
        if events := filter_policy(subscription):
            properties |= {"FilterPolicy": events, "FilterPolicyScope": FILTER_POLICY_SCOPE}
        resources[subscription.logical_id] = _resource("AWS::SNS::Subscription", **properties)
    resources |= _alarms()
    resources["LimitStore"] = _limit_store()
    resources["AppPolicy"] = _app_policy()
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "Nudged: SNS topics, SQS queues with dead-letter queues, alarms, app policy",
        "Parameters": _parameters(),
        "Conditions": {
            "HasAlarmEmail": _not_empty("AlarmEmail"),
            "HasAppRole": _not_empty("AppRoleName"),
            "HasLimitStore": _not_empty_list("CacheSubnetIds"),
            "HasCacheSecurityGroups": _not_empty_list("CacheSecurityGroupIds"),
        },
        "Resources": resources,
        "Outputs": _outputs(),
    }


def _parameters() -> dict[str, Any]:
    parameters: dict[str, Any] = {
        "Prefix": {
            "Type": "String",
            "Default": DEFAULT_PREFIX,
            "AllowedPattern": "^[A-Za-z0-9_-]{1,60}$",
            "Description": "Start of every name: <Prefix>-restock, <Prefix>-stock-events, ...",
        }
    }
    for parameter in PARAMETERS:
        parameters[parameter.name] = {
            "Type": "Number",
            "Default": parameter.default,
            "MinValue": parameter.minimum,
            "MaxValue": parameter.maximum,
            "Description": parameter.description,
        }
    return parameters | AWS_ONLY_PARAMETERS


def _queue_properties(queue: Queue) -> dict[str, Any]:
    properties: dict[str, Any] = {"QueueName": _name(queue)}
    properties |= {key: _value(value) for key, value in queue.attributes.items()}
    if queue.dead_letter_queue:
        properties["RedrivePolicy"] = redrive_policy(
            dead_letter_arn=_arn(queue.dead_letter_queue),
            max_receive_count=_value(MAX_RECEIVE_COUNT),
        )
    if sources := sources_of(queue):
        # Built from the name, not Fn::GetAtt: the source's redrive policy already refers to
        # this queue, and a reference back would be a circular dependency.
        properties["RedriveAllowPolicy"] = redrive_allow_policy(
            source_arns=[_arn_from_name(q) for q in sources]
        )
    return properties


def _alarms() -> dict[str, Any]:
    actions = [_ref("AlarmTopic")]
    alarms: dict[str, Any] = {
        "AlarmTopic": _resource("AWS::SNS::Topic", TopicName={"Fn::Sub": "${Prefix}-alarms"}),
        "AlarmEmailSubscription": _resource(
            "AWS::SNS::Subscription",
            condition="HasAlarmEmail",
            TopicArn=_ref("AlarmTopic"),
            Protocol="email",
            Endpoint=_ref("AlarmEmail"),
        ),
    }

    def alarm(queue: Queue, what: str, why: str, **properties: Any) -> dict[str, Any]:
        return _resource(
            "AWS::CloudWatch::Alarm",
            AlarmName={"Fn::Sub": f"${{Prefix}}-{queue.suffix}-{what}"},
            AlarmDescription={"Fn::Sub": f"{why} ${{Prefix}}-{queue.suffix}: see {RUNBOOK}"},
            Namespace="AWS/SQS",
            Dimensions=[{"Name": "QueueName", "Value": _get_att(queue, "QueueName")}],
            Statistic="Maximum",
            Period=60,
            EvaluationPeriods=1,
            **properties,
            # SQS reports nothing for a queue idle for six hours: keep the last state.
            TreatMissingData="missing",
            AlarmActions=actions,
            OKActions=actions,
        )

    for queue in QUEUES:
        if sources_of(queue):
            alarms[f"{queue.logical_id}Alarm"] = alarm(
                queue,
                "not-empty",
                "Messages died in",
                MetricName="ApproximateNumberOfMessagesVisible",
                ComparisonOperator="GreaterThanThreshold",
                Threshold=0,
            )
        if queue.age_alarm:
            alarms[f"{queue.logical_id}AgeAlarm"] = alarm(
                queue,
                "oldest-message",
                "Messages wait too long in",
                MetricName="ApproximateAgeOfOldestMessage",
                ComparisonOperator="GreaterThanThreshold",
                Threshold=_ref("MessageAgeAlarmSeconds"),
            )
    return alarms


def _limit_store() -> dict[str, Any]:
    """The rate limits' Redis (nudged.core.ratelimits): ElastiCache Serverless, in the web hosts'
    subnets; its endpoint is the CacheUrl output (TLS: rediss://)."""
    return _resource(
        "AWS::ElastiCache::ServerlessCache",
        condition="HasLimitStore",
        ServerlessCacheName={"Fn::Sub": "${Prefix}-limits"},
        Description="Nudged's rate-limit counters",
        Engine="valkey",
        MajorEngineVersion="8",
        SubnetIds=_ref("CacheSubnetIds"),
        SecurityGroupIds={
            "Fn::If": [
                "HasCacheSecurityGroups",
                _ref("CacheSecurityGroupIds"),
                _ref("AWS::NoValue"),
            ]
        },
    )


def _app_policy() -> dict[str, Any]:
    """Exactly what the web and worker processes call, on exactly Nudged's resources.

    sts:GetCallerIdentity (the account id in ARNs) needs no permission.
    """
    statements: list[dict[str, Any]] = [
        {
            "Sid": "PublishEvents",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": [_ref(t.logical_id) for t in TOPICS],
        }
    ]
    statements += [
        {
            "Sid": queue.logical_id,
            "Effect": "Allow",
            "Action": sorted(queue.actions),
            "Resource": _arn(queue),
        }
        for queue in QUEUES
    ]
    return _resource(
        "AWS::IAM::ManagedPolicy",
        Description={"Fn::Sub": "What the ${Prefix} web and worker processes do on SNS and SQS"},
        PolicyDocument={"Version": "2012-10-17", "Statement": statements},
        Roles={"Fn::If": ["HasAppRole", [_ref("AppRoleName")], _ref("AWS::NoValue")]},
    )


def _outputs() -> dict[str, Any]:
    """One output per environment variable of the app, its name as the description."""
    outputs: dict[str, Any] = {}
    for resource in (*TOPICS, *QUEUES):
        attribute = "TopicName" if isinstance(resource, Topic) else "QueueName"
        outputs[_camel(resource.setting)] = {
            "Description": resource.setting,
            "Value": _get_att(resource, attribute),
        }
    for parameter in PARAMETERS:
        outputs[_camel(parameter.setting)] = {
            "Description": parameter.setting,
            "Value": _ref(parameter.name),
        }
    outputs["AwsDefaultRegion"] = {
        "Description": "AWS_DEFAULT_REGION",
        "Value": _ref("AWS::Region"),
    }
    outputs["CacheUrl"] = {
        "Condition": "HasLimitStore",
        "Description": "CACHE_URL",
        "Value": {
            "Fn::Sub": "rediss://${LimitStore.Endpoint.Address}:${LimitStore.Endpoint.Port}/0"
        },
    }
    outputs["AppPolicyArn"] = {
        "Description": "The managed policy to attach to the app's role",
        "Value": _ref("AppPolicy"),
    }
    outputs["AlarmTopicArn"] = {
        "Description": "The topic the alarms notify",
        "Value": _ref("AlarmTopic"),
    }
    return outputs


def _resource(kind: str, condition: str = "", **properties: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"Type": kind}
    if condition:
        resource["Condition"] = condition
    return resource | {"Properties": properties}


def _ref(name: str) -> dict[str, str]:
    return {"Ref": name}


def _get_att(resource: Topic | Queue, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [resource.logical_id, attribute]}


def _name(resource: Topic | Queue) -> dict[str, str]:
    return {"Fn::Sub": f"${{Prefix}}-{resource.suffix}"}


def _arn(queue: Queue) -> dict[str, list[str]]:
    return _get_att(queue, "Arn")


def _arn_from_name(queue: Queue) -> dict[str, str]:
    return {
        "Fn::Sub": "arn:${AWS::Partition}:sqs:${AWS::Region}:${AWS::AccountId}:"
        f"${{Prefix}}-{queue.suffix}"
    }


def _value(value: int | Parameter) -> int | dict[str, str]:
    return _ref(value.name) if isinstance(value, Parameter) else value


def _not_empty(parameter: str) -> dict[str, Any]:
    return {"Fn::Not": [{"Fn::Equals": [_ref(parameter), ""]}]}


def _not_empty_list(parameter: str) -> dict[str, Any]:
    return {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", _ref(parameter)]}, ""]}]}


def _camel(setting: str) -> str:
    """SQS_RESTOCK_DLQ -> SqsRestockDlq (output keys are alphanumeric)."""
    return "".join(word.capitalize() for word in setting.split("_"))
