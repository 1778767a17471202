"""The ARM emulator behaves like ARM for the clients the operator uses: azure-identity, azure-mgmt-core and
azure-mgmt-security, over real TLS."""

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import WorkloadIdentityCredential
from azure.mgmt.security import SecurityCenter

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.connector import connector_body
from defender_operator.sandbox import Sandbox, emulators, processes
from tests.support.clouds import (
    SUBSCRIPTION,
    TENANT,
    arm_client,
    arm_control,
    arm_requests,
    connector_url,
    credential,
    reset_clouds,
    send,
)
from tests.support.manifests import base_manifest

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def clean(sandbox: Sandbox) -> None:
    reset_clouds(sandbox)


def body(account: str = "111122223333") -> dict:  # type: ignore[type-arg]
    return connector_body(AWSConnectorSpec.model_validate(base_manifest(account=account)["spec"]))


def test_put_get_patch_delete_lifecycle(sandbox: Sandbox) -> None:
    client = arm_client(sandbox)
    created = send(client, "PUT", connector_url("c1"), body())
    assert created.status_code == 201
    resource = created.json()
    assert (
        resource["id"].endswith("/securityConnectors/c1")
        and resource["type"] == "Microsoft.Security/securityConnectors"
    )
    assert resource["systemData"]["createdBy"] == "sandbox-tests"
    assert resource["properties"]["environmentData"]["accountName"] == "aws-111122223333"
    trial = resource["properties"]["hierarchyIdentifierTrialEndDate"]  # servers etc. are paid offerings
    assert 29 <= (time.mktime(time.strptime(trial[:19], "%Y-%m-%dT%H:%M:%S")) - time.time()) / 86400 <= 31
    updated = send(client, "PUT", connector_url("c1"), body())
    assert updated.status_code == 200 and updated.json()["etag"] != resource["etag"]
    assert updated.json()["properties"]["hierarchyIdentifierTrialEndDate"] == trial  # the trial starts once
    patched = send(client, "PATCH", connector_url("c1"), {"tags": {"team": "security"}})
    assert patched.status_code == 200 and patched.json()["tags"] == {"team": "security"}
    assert send(client, "GET", connector_url("c1")).json()["tags"] == {"team": "security"}
    assert send(client, "DELETE", connector_url("c1")).status_code == 200
    assert send(client, "DELETE", connector_url("c1")).status_code == 204
    missing = send(client, "GET", connector_url("c1"))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


def test_misspelt_field_is_a_400_naming_the_field(sandbox: Sandbox) -> None:
    bad = body()
    bad["properties"]["offerings"][0]["nativeCloudConnection"]["cloudRoleArnn"] = "x"
    response = send(arm_client(sandbox), "PUT", connector_url("c1"), bad)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "InvalidRequestContent"
    assert (
        "properties.offerings[0].nativeCloudConnection" in error["message"]
        and "cloudRoleArnn" in error["message"]
    )


def test_api_version_is_required_and_checked(sandbox: Sandbox) -> None:
    client = arm_client(sandbox)
    path = connector_url("c1").split("?")[0]
    assert send(client, "GET", path).json()["error"]["code"] == "MissingApiVersionParameter"
    assert (
        send(client, "GET", path + "?api-version=2023-10-01-preview").json()["error"]["code"]
        == "InvalidApiVersionParameter"
    )


def test_conditional_requests_follow_the_arm_contract(sandbox: Sandbox) -> None:
    """azure-resource-manager-rpc v1.0/Addendum.md, "ETags for Resources": the etag is an entity-tag (quotes
    included) compared exactly; If-Match * needs the resource, If-None-Match * needs it absent."""
    client = arm_client(sandbox)
    assert send(client, "PUT", connector_url("c1"), body(), **{"If-Match": "*"}).status_code == 412
    created = send(client, "PUT", connector_url("c1"), body(), **{"If-None-Match": "*"})
    assert created.status_code == 201
    etag = created.json()["etag"]
    assert etag.startswith('"') and etag.endswith('"') and len(etag) > 2
    assert send(client, "PUT", connector_url("c1"), body(), **{"If-None-Match": "*"}).status_code == 412
    stale = send(client, "PUT", connector_url("c1"), body(), **{"If-Match": '"not-the-etag"'})
    assert stale.status_code == 412
    assert send(client, "PUT", connector_url("c1"), body(), **{"If-Match": f'"{etag}"'}).status_code == 412
    updated = send(client, "PUT", connector_url("c1"), body(), **{"If-Match": etag})
    assert updated.status_code == 200 and updated.json()["etag"] != etag
    assert send(client, "DELETE", connector_url("c1"), **{"If-Match": etag}).status_code == 412
    assert (
        send(client, "DELETE", connector_url("c1"), **{"If-Match": updated.json()["etag"]}).status_code == 200
    )
    assert send(client, "DELETE", connector_url("c1"), **{"If-Match": etag}).status_code == 204


def test_second_connector_for_the_same_account_conflicts(sandbox: Sandbox) -> None:
    client = arm_client(sandbox)
    assert send(client, "PUT", connector_url("c1"), body()).status_code == 201
    conflict = send(client, "PUT", connector_url("c2", resource_group="other"), body())
    assert conflict.status_code == 409 and "111122223333" in conflict.json()["error"]["message"]


def test_list_pages_with_next_link(sandbox: Sandbox, tmp_path: Path) -> None:
    url, ca_file = emulators.start_arm(tmp_path, page_size=2, name="arm-paging")
    try:
        paging = Sandbox(
            state=tmp_path, control_plane=sandbox.control_plane, arm_endpoint=url, arm_ca_file=str(ca_file)
        )
        client = arm_client(paging)
        for i in range(5):
            assert (
                send(client, "PUT", connector_url(f"c{i}"), body(account=f"11112222333{i}")).status_code
                == 201
            )
        page = send(
            client,
            "GET",
            f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Security/securityConnectors?api-version=2024-08-01-preview",
        ).json()
        names = [c["name"] for c in page["value"]]
        while "nextLink" in page:
            page = send(client, "GET", page["nextLink"]).json()
            names += [c["name"] for c in page["value"]]
        assert names == [f"c{i}" for i in range(5)]
        rg_page = send(
            client,
            "GET",
            f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Security/securityConnectors?api-version=2024-08-01-preview",
        ).json()
        assert len(rg_page["value"]) == 2 and "nextLink" in rg_page
    finally:
        processes.stop_recorded(tmp_path)


def test_health_reports_with_the_sdk_and_the_control_endpoint(sandbox: Sandbox) -> None:
    connector = send(arm_client(sandbox), "PUT", connector_url("c1"), body()).json()
    security = SecurityCenter(
        credential(sandbox),
        SUBSCRIPTION,
        base_url=sandbox.arm_endpoint,
        connection_verify=sandbox.arm_ca_file,
    )
    (report,) = security.health_reports.list(scope=connector["id"].lstrip("/"))
    assert report.status.code == "Healthy"
    arm_control(
        sandbox,
        "/_sandbox/health",
        {
            "connectorId": connector["id"],
            "status": "NotHealthy",
            "reason": "RoleMissing",
            "issues": [
                {
                    "issueKey": "MissingRole",
                    "issueDescription": "CspmMonitorAws cannot be assumed",
                    "remediationSteps": "Redeploy the stack",
                }
            ],
        },
    )
    (report,) = security.health_reports.list(scope=connector["id"].lstrip("/"))
    assert report.status.code == "NotHealthy"
    assert (
        report.issues[0].issue_key == "MissingRole"
        and report.issues[0].remediation_steps == "Redeploy the stack"
    )


def test_retries_throttling_and_dropped_connections(sandbox: Sandbox) -> None:
    arm_control(
        sandbox,
        "/_sandbox/faults",
        {
            "method": "PUT",
            "pathPattern": "securityConnectors/c1",
            "count": 2,
            "status": 429,
            "retryAfter": 0.2,
        },
    )
    arm_control(
        sandbox,
        "/_sandbox/faults",
        {"method": "GET", "pathPattern": "securityConnectors/c1", "count": 1, "drop": True},
    )
    client = arm_client(sandbox, retry_backoff_factor=0.1)
    assert send(client, "PUT", connector_url("c1"), body()).status_code == 201
    assert send(client, "GET", connector_url("c1")).status_code == 200
    puts = [r for r in arm_requests(sandbox) if r["method"] == "PUT"]
    assert [r["status"] for r in puts] == [429, 429, 201]


def test_request_log_records_method_path_and_status(sandbox: Sandbox) -> None:
    send(arm_client(sandbox), "GET", connector_url("nothing"))
    (logged,) = [r for r in arm_requests(sandbox) if "securityConnectors" in r["path"]]
    assert (
        logged["method"] == "GET"
        and logged["status"] == 404
        and logged["query"]["api-version"] == "2024-08-01-preview"
    )


def test_workload_identity_credential(sandbox: Sandbox, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmZW5kZXIifQ.c2ln")
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT,
        client_id="operator-identity",
        token_file_path=str(token_file),
        authority=sandbox.arm_endpoint,
        disable_instance_discovery=True,
        connection_verify=sandbox.arm_ca_file,
    )
    assert credential.get_token("https://management.azure.com/.default").token.startswith("sandbox.")


def test_wrong_secret_is_refused(sandbox: Sandbox) -> None:
    with pytest.raises(ClientAuthenticationError) as info:
        credential(sandbox, secret="wrong").get_token("https://management.azure.com/.default")
    assert "AADSTS7000215" in str(info.value)


def test_unauthenticated_requests_are_refused(sandbox: Sandbox) -> None:
    context = ssl.create_default_context(cafile=sandbox.arm_ca_file)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{sandbox.arm_endpoint}{connector_url('c1')}", context=context)
    assert info.value.code == 401
    assert json.loads(info.value.read())["error"]["code"] == "InvalidAuthenticationToken"


def test_role_assignments_limit_a_client_to_their_scopes(sandbox: Sandbox) -> None:
    """An assigned client acts within its scopes and beneath them, reads the subscription that holds them, and is
    refused elsewhere with ARM's AuthorizationFailed naming action and scope; others stay unrestricted."""
    granted = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/team-a"
    arm_control(sandbox, "/_sandbox/role-assignments", {"sandbox-tests": [granted]})
    client = arm_client(sandbox)
    try:
        assert send(client, "PUT", connector_url("c1", "team-a"), body()).status_code == 201
        health = f"{connector_url('c1', 'team-a').split('?')[0]}/providers/Microsoft.Security/healthReports"
        assert send(client, "GET", f"{health}?api-version=2023-05-01-preview").status_code == 200
        assert send(client, "GET", f"/subscriptions/{SUBSCRIPTION}?api-version=2022-12-01").status_code == 200
        other = "22222222-2222-3333-4444-555555555555"
        assert send(client, "GET", f"/subscriptions/{other}?api-version=2022-12-01").status_code == 403
        refused = send(client, "PUT", connector_url("c2", "team-b"), body("111122224444"))
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "AuthorizationFailed"
        assert "'Microsoft.Security/securityConnectors/write'" in error["message"]
        assert "/resourceGroups/team-b/" in error["message"]
        listing = (
            f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Security/securityConnectors?api-version="
        )
        assert send(client, "GET", listing + "2024-08-01-preview").status_code == 403
        # a group whose name merely starts like the granted one is another scope
        assert send(client, "GET", connector_url("c1", "team-a2")).status_code == 403
    finally:
        arm_control(sandbox, "/_sandbox/role-assignments", {"sandbox-tests": None})
    assert send(client, "PUT", connector_url("c2", "team-b"), body("111122224444")).status_code == 201


def test_pricings_are_free_until_turned_on_and_read_at_subscription_scope(sandbox: Sandbox) -> None:
    """Microsoft.Security/pricings as the REST spec (2024-01-01) has them: every plan Free in a new subscription,
    PUT turns one on, unknown names are refused, and a client assigned on a resource group only cannot read them."""
    client = arm_client(sandbox)
    base = f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Security/pricings"
    version = "?api-version=2024-01-01"
    listed = send(client, "GET", base + version).json()["value"]
    assert {p["name"] for p in listed} >= {"VirtualMachines", "Containers", "SqlServerVirtualMachines"}
    assert {p["properties"]["pricingTier"] for p in listed} == {"Free"}
    assert send(client, "GET", base + version.replace("2024-01-01", "2017-08-01-preview")).status_code == 400
    turned = send(
        client,
        "PUT",
        f"{base}/VirtualMachines{version}",
        {"properties": {"pricingTier": "Standard", "subPlan": "P2"}},
    )
    assert turned.status_code == 200 and turned.json()["properties"]["subPlan"] == "P2"
    assert (
        send(client, "GET", f"{base}/virtualmachines{version}").json()["properties"]["pricingTier"]
        == "Standard"
    )
    assert send(client, "GET", f"{base}/NoSuchPlan{version}").status_code == 404
    assert (
        send(
            client, "PUT", f"{base}/Containers{version}", {"properties": {"pricingTier": "Gold"}}
        ).status_code
        == 400
    )
    arm_control(
        sandbox,
        "/_sandbox/role-assignments",
        {"sandbox-tests": [f"/subscriptions/{SUBSCRIPTION}/resourceGroups/a"]},
    )
    try:
        refused = send(client, "GET", base + version)
        assert refused.status_code == 403
        assert "'Microsoft.Security/pricings/read'" in refused.json()["error"]["message"]
    finally:
        arm_control(sandbox, "/_sandbox/role-assignments", {"sandbox-tests": None})
        send(client, "PUT", f"{base}/VirtualMachines{version}", {"properties": {"pricingTier": "Free"}})


def test_graph_reads_a_service_principal_of_the_callers_tenant_with_application_read_all(
    sandbox: Sandbox,
) -> None:
    """Graph v1.0 "Get servicePrincipal" (sandbox/arm/graph.py): 403 Authorization_RequestDenied without
    Application.Read.All, 404 Request_ResourceNotFound for an id the caller's tenant does not have (another
    tenant's included), the service principal otherwise."""
    assert sandbox.arm_endpoint
    client = arm_client(sandbox, scope=f"{sandbox.arm_endpoint}/.default")
    url = "/v1.0/servicePrincipals/0b7a4d3c-1111-2222-3333-444455556666"
    refused = send(client, "GET", url)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
    principal = {"id": "0b7a4d3c-1111-2222-3333-444455556666", "displayName": "mciem-aws-oidc-connector"}
    elsewhere = {**principal, "tenantId": "12121212-3434-5656-7878-909090909090"}
    arm_control(sandbox, "/_sandbox/graph", {"readers": ["sandbox-tests"], "servicePrincipals": [elsewhere]})
    missing = send(client, "GET", url)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "Request_ResourceNotFound"
    names = ["api://mciem-aws-oidc-app"]
    arm_control(
        sandbox,
        "/_sandbox/graph",
        {"servicePrincipals": [{**principal, "tenantId": TENANT, "servicePrincipalNames": names}]},
    )
    found = send(client, "GET", url)
    assert found.status_code == 200 and found.json()["servicePrincipalNames"] == names
