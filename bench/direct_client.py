"""Baselines: clients onboarding an account with the calls of the operator's first pass, made directly.

The ideal client assumes the onboarding role, creates the Microsoft identity provider, creates the stack with the
operator's own template, polls it to CREATE_COMPLETE, and PUTs the connector with the operator's own body (create-only,
after the subscription was read once for all): no Kubernetes, no status, no ownership marks, no reads it can do
without. With ``same_calls`` it also makes the other cloud calls of the operator's first pass: it reads the
connector before the PUT (the check that keeps the operator off another team's connector), Defender's health
reports after it, lists the EKS clusters of the region (Kubernetes discovery) and its running EC2 instances (the
Servers plan's prerequisite check). bench.converge runs both against
the same emulators, at the operator's concurrency (8 workers), beside the operator.
"""

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import botocore.session
from tests.support.clouds import arm_client, send

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.aws.client_classes import share_client_classes
from defender_operator.azure.connector import HEALTH_API_VERSION
from defender_operator.operator_main import collect_less_often
from defender_operator.render.catalog import catalog
from defender_operator.render.cloudformation import OIDC_PARAMETER, stack_template
from defender_operator.render.connector import API_VERSION, connector_body
from defender_operator.sandbox import Sandbox
from defender_operator.settings import Settings

CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
# One session for every client, its service models loaded before any measure, and one client class and service model
# per service (as the operator builds them, aws/client_classes.py): the ideal client pays none of these.
share_client_classes()
SESSION = boto3.Session(botocore_session=botocore.session.get_session())
for _service in ("sts", "iam", "cloudformation", "eks", "ec2"):
    SESSION.client(_service, region_name="us-east-1", aws_access_key_id="warm", aws_secret_access_key="warm")
# The operator's garbage-collector setting too: the ideal client is not slowed by what the operator avoids.
collect_less_often(Settings().gc_young_threshold)


def onboard(
    box: Sandbox, manifest: dict[str, Any], arm: Any, aws_endpoint: str, same_calls: bool = False
) -> None:
    spec = AWSConnectorSpec.model_validate(manifest["spec"])
    assert spec.aws.credentials and spec.aws.credentials.role_arn
    env = box.env()
    sts = SESSION.client(
        "sts",
        endpoint_url=aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    keys = sts.assume_role(RoleArn=spec.aws.credentials.role_arn, RoleSessionName="direct")["Credentials"]
    assumed = {
        "aws_access_key_id": keys["AccessKeyId"],
        "aws_secret_access_key": keys["SecretAccessKey"],
        "aws_session_token": keys["SessionToken"],
        "region_name": "us-east-1",
        "endpoint_url": aws_endpoint,
    }
    iam = SESSION.client("iam", **assumed)
    ms = catalog().microsoft_oidc
    provider = iam.create_open_id_connect_provider(
        Url=f"https://{ms.host}", ClientIDList=ms.audiences, ThumbprintList=ms.thumbprints
    )["OpenIDConnectProviderArn"]
    cloudformation = SESSION.client("cloudformation", **assumed)
    name = spec.stack_name
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=json.dumps(stack_template(spec)),
        Parameters=[{"ParameterKey": OIDC_PARAMETER, "ParameterValue": provider}],
        Capabilities=CAPABILITIES,
    )
    while True:
        stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
        if not stack["StackStatus"].endswith("_IN_PROGRESS"):
            break
        time.sleep(0.2)
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack["StackStatus"]
    subscription, group = spec.azure.subscription_id, spec.azure.resource_group
    body = connector_body(spec)
    path = (
        f"/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Security/securityConnectors/"
        f"{spec.azure.connector_name or manifest['metadata']['name']}"
    )
    if same_calls:
        assert send(arm, "GET", f"{path}?api-version={API_VERSION}").status_code == 404
    response = send(arm, "PUT", f"{path}?api-version={API_VERSION}", body, **{"If-None-Match": "*"})
    assert response.status_code in (200, 201), response.text()
    if same_calls:
        health = f"{path}/providers/Microsoft.Security/healthReports?api-version={HEALTH_API_VERSION}"
        assert send(arm, "GET", health).status_code == 200
        SESSION.client("eks", **{**assumed, "region_name": spec.aws.regions[0]}).list_clusters()
        running = [{"Name": "instance-state-name", "Values": ["running"]}]
        SESSION.client("ec2", **{**assumed, "region_name": spec.aws.regions[0]}).describe_instances(
            Filters=running, MaxResults=1000
        )


def onboard_all(
    box: Sandbox,
    manifests: Sequence[dict[str, Any]],
    aws_endpoint: str,
    workers: int = 8,
    same_calls: bool = False,
) -> float:
    """Seconds to onboard every manifest, ``workers`` at a time (one ARM pipeline, as the operator shares one).
    ``aws_endpoint`` is the operator's own way to AWS (its proxy), so both take the same path."""
    arm = arm_client(box)
    started = time.monotonic()
    subscriptions = {m["spec"]["azure"]["subscriptionId"] for m in manifests}
    for subscription in subscriptions:  # once for all, as the operator reads it once an hour per credential
        assert send(arm, "GET", f"/subscriptions/{subscription}?api-version=2022-12-01").status_code == 200
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done in [pool.submit(onboard, box, m, arm, aws_endpoint, same_calls) for m in manifests]:
            done.result()
    return time.monotonic() - started
