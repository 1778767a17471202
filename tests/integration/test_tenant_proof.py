"""Tenant-proof (issue 25): no tenant, tag-only actor or unlucky deletion turns the operator's power against anyone.

The tenant here is a user with a Role in one namespace that lets it manage AWSConnectors and Secrets there and
nothing else, acting with its own client certificate against the sandbox's API server (with its admission policies
and, for namespace deletion, the real namespace controller of kube-controller-manager). The tag-only actor writes
tags in AWS and Azure and nothing else. The operator runs as its own process.
"""

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.admission import (
    FROZEN_NAME,
    HANDLER_STATE_NAME,
    frozen_binding,
    handler_state_binding,
)
from defender_operator.aws.oidc import AUDIENCES_TAG, CREATED_TAG, audience_code
from defender_operator.ownership import OWNER_TAG, OWNER_UID_TAG
from defender_operator.sandbox import Sandbox
from defender_operator.sandbox.controlplane import apply_admission
from tests.support.clouds import arm_client, connector_url, foreign_connector_body, send
from tests.support.kube import apply, condition, get_object, kubectl, wait_for
from tests.support.onboarding import (
    MS_PROVIDER,
    account_of,
    aws_in,
    azure_app,
    connector,
    defender_roles,
    manifest,
    organization_ou,
    own_secrets,
    paused_first,
    request_reconcile,
    resumed_with_a_change,
    stacks_of,
    tenant_secrets,
)
from tests.support.operator import OperatorProcess, module_operator, wait_condition, wait_gone
from tests.support.policies import OPT_OUT, bare_namespace, effective_policies, grant

pytestmark = pytest.mark.integration

DEFAULT_TENANT = "99999999-8888-7777-6666-555555555555"
OTHER_TENANT = "77777777-6666-5555-4444-333333333333"
OTHER_SUBSCRIPTION = "22222222-3333-4444-5555-666666666666"
SENTINEL_AUDIENCE = "api://1462b192-27f7-4cb9-8523-0f4ecb54b47e"
CLAIM_GRACE = 20  # how long an object that never wrote keeps others of its account and subscription waiting
SKEW = (
    1.0  # the operator's allowed clock skew here; foreign resources are made more than this before the object
)


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # A long resync: whatever a test waits for must come from an event, not from the next periodic pass. The
    # policies and the namespaces are listed again every 2 s, so every grant here is decided from both views of them.
    env = {
        "DEFENDER_OPERATOR_CLOCK_SKEW_SECONDS": str(SKEW),
        "DEFENDER_OPERATOR_RESYNC_SECONDS": "300",
        "DEFENDER_OPERATOR_POLICY_RELIST_SECONDS": "2",
        "DEFENDER_OPERATOR_CLAIM_GRACE_SECONDS": str(CLAIM_GRACE),
    }
    with module_operator(sandbox, tmp_path_factory, "tenant-proof-operator", extra_env=env) as running:
        yield running


# --- the actors --------------------------------------------------------------------------------------------------------


def tenant(sandbox: Sandbox, kubeconfig: Path, namespace: str) -> Path:
    """A user who may manage AWSConnectors and Secrets in ``namespace`` and nothing else."""
    user = f"tenant-{namespace}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "tenant", "namespace": namespace},
        "rules": [
            {"apiGroups": ["defender-operator.io"], "resources": ["awsconnectors"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "tenant", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    assert apply(kubeconfig, [role, binding]).returncode == 0
    return sandbox.control_plane.issue_user(user)


def change_grant(kubeconfig: Path, name: str, **aws: Any) -> None:
    patch = json.dumps({"spec": {"aws": aws}})
    kubectl(kubeconfig, "patch", "clusteronboardingpolicy", name, "--type=merge", "-p", patch, check=True)

    def folded() -> bool:
        out = kubectl(
            kubeconfig, "get", "effectiveonboardingpolicy", "effective", "-o", "json", check=True
        ).stdout
        rule = next(r for r in json.loads(out)["spec"]["rules"] if r["policy"] == name)
        # the parameter keeps its lists sorted (account ids are random in organization tests)
        return all(
            rule.get(f"aws{k[0].upper()}{k[1:]}") == (sorted(v) if isinstance(v, list) else v)
            for k, v in aws.items()
        )

    wait_for(folded, 30, f"the operator to fold the change of {name}")


def revoke(kubeconfig: Path, name: str) -> None:
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, "--ignore-not-found", check=True)


def record_of(kubeconfig: Path, uid: str) -> dict[str, Any] | None:
    found = kubectl(kubeconfig, "get", "onboardingrecord", uid, "-o", "json")
    return json.loads(found.stdout) if found.returncode == 0 else None


def provider_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:oidc-provider/{MS_PROVIDER}"


def older_than_skew(since: float) -> None:
    """Wait until the clock is past ``since`` by more than the skew the operator allows (a condition on the clock,
    so a slow machine only waits longer)."""
    wait_for(lambda: time.time() > since + SKEW + 1, SKEW + 5, "the clock to pass the allowed skew")


def left_behind(sandbox: Sandbox, m: dict[str, Any]) -> dict[str, Any]:
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    found = {
        "stacks": [s["StackName"] for s in stacks_of(sandbox, account)],
        "roles": defender_roles(sandbox, account),
        "providers": [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]],
        "connector": connector(sandbox, m).status_code != 404,
    }
    return {kind: what for kind, what in found.items() if what}


def binary_keys(user: Path, namespace: str, name: str, tmp_path: Path) -> None:
    """AWS keys that are not text (an access key id of raw bytes): credentials that never work."""
    (tmp_path / name).write_bytes(b"AKIA\xff\xfe\x00BINARY")
    kubectl(
        user, "create", "secret", "generic", name, "-n", namespace, f"--from-file=accessKeyId={tmp_path / name}",
        "--from-literal=secretAccessKey=tenant-own-secret-access-key", check=True,
    )  # fmt: skip


# --- 1. CIEM is a grant of its own --------------------------------------------------------------------------------------


def ciem(m: dict[str, Any], tenant_id: str) -> dict[str, Any]:
    m["spec"]["azure"]["tenantId"] = tenant_id
    m["spec"]["plans"] = {
        "cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": str(uuid.uuid4())}}
    }
    return m


def test_ciem_trusts_only_an_entra_tenant_the_grant_names(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    policy = grant(kubeconfig, [namespace], account_of(m))
    try:
        refused = apply(user, ciem(m, OTHER_TENANT))
        assert refused.returncode != 0 and "aws.ciemTenantIds" in refused.stderr, refused.stderr
        change_grant(kubeconfig, policy, ciemTenantIds=[DEFAULT_TENANT])
        refused = apply(user, ciem(m, OTHER_TENANT))  # its own Entra tenant: not the one granted
        assert refused.returncode != 0 and "aws.ciemTenantIds" in refused.stderr
        # Admitted while the grant named its tenant, then the grant changes: the operator's own check refuses it.
        paused = ciem(m, DEFAULT_TENANT)
        paused["metadata"]["annotations"] = {"defender-operator.io/paused": "true"}
        assert apply(user, paused).returncode == 0
        change_grant(kubeconfig, policy, ciemTenantIds=[OTHER_TENANT])
        kubectl(user, "annotate", "awsc", "-n", namespace, "acme", "defender-operator.io/paused-", check=True)
        obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy")
        assert "aws.ciemTenantIds" in condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert left_behind(sandbox, m) == {} and record_of(kubeconfig, obj["metadata"]["uid"]) is None
        kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, "acme", timeout=45)
    finally:
        revoke(kubeconfig, policy)


# --- 2. adoption never crosses another live object ----------------------------------------------------------------------


def test_adoption_never_takes_over_another_live_objects_stack(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    a, b = bare_namespace(kubeconfig), bare_namespace(kubeconfig)
    prod = manifest(a, "prod")
    account = account_of(prod)
    policy = grant(kubeconfig, [a, b], account, adoption=True)
    try:
        assert apply(kubeconfig, prod).returncode == 0
        wait_condition(kubeconfig, a, "prod", "Ready", "True")
        (before,) = stacks_of(sandbox, account)
        hijack = manifest(
            b, "hijack", account=account
        )  # the same account (and stack name), another subscription
        hijack["spec"]["azure"]["subscriptionId"] = OTHER_SUBSCRIPTION
        hijack["metadata"]["annotations"] = {"defender-operator.io/adopt": "true"}
        assert apply(tenant(sandbox, kubeconfig, b), hijack).returncode == 0
        obj = wait_condition(kubeconfig, b, "hijack", "Stalled", "True", reason="StackOwnedElsewhere")
        message = condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert f"{a}/prod" in message and "which exists" in message
        kubectl(kubeconfig, "delete", "awsc", "-n", b, "hijack", "--wait=false", check=True)
        wait_gone(kubeconfig, b, "hijack")
        (after,) = stacks_of(sandbox, account)
        assert (after["StackId"], after.get("LastUpdatedTime")) == (
            before["StackId"],
            before.get("LastUpdatedTime"),
        )
        wait_condition(kubeconfig, a, "prod", "Ready", "True")
        kubectl(kubeconfig, "delete", "awsc", "-n", a, "prod", "--wait=false", check=True)
        wait_gone(kubeconfig, a, "prod")
        assert left_behind(sandbox, prod) == {}
    finally:
        revoke(kubeconfig, policy)


# --- 3. the spec cleanup acts on ------------------------------------------------------------------------------------------


def test_an_object_cannot_be_created_with_the_operators_handler_state(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Kopf keeps the cleanup handler's state in the annotation defender-operator.io/cleanup and believes it: an
    object created as already cleaned up would be let go without cleanup on delete, its stack and connector left in
    place, by a user who may only create. The API server refuses such an object, naming the annotation; the
    annotations meant for users still pass."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    m["spec"]["aws"]["credentials"] = {"secretRef": {"name": "own-keys"}}  # allowed without a grant
    m["spec"]["azure"]["credentialsSecretRef"] = {"name": "own-app"}
    for state in ('{"success": true}', '{"delayed": "2999-01-01T00:00:00"}'):
        forged = {**m, "metadata": {**m["metadata"], "annotations": {"defender-operator.io/cleanup": state}}}
        refused = apply(user, forged)
        assert refused.returncode != 0 and "metadata.annotations" in refused.stderr, refused.stderr
    assert get_object(kubeconfig, namespace, "acme") is None
    paused = {**m, "metadata": {**m["metadata"], "annotations": {"defender-operator.io/paused": "true"}}}
    made = apply(user, paused)
    assert made.returncode == 0, made.stderr
    kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme")
    # Where the policy is not installed (admissionPolicy.enabled false), the operator takes the state off a live
    # object before its first cloud write.
    kubectl(kubeconfig, "delete", "validatingadmissionpolicybinding", HANDLER_STATE_NAME, check=True)
    try:
        forged = {
            **m,
            "metadata": {
                **m["metadata"],
                "annotations": {"defender-operator.io/cleanup": '{"success": true}'},
            },
        }
        wait_for(lambda: apply(user, forged).returncode == 0, 30, "the create to land without the policy")

        def state_gone() -> bool:
            obj = get_object(kubeconfig, namespace, "acme") or {}
            return "defender-operator.io/cleanup" not in (obj.get("metadata", {}).get("annotations") or {})

        wait_for(state_gone, 60, "the operator to take the forged state off")
    finally:
        apply_admission(sandbox.control_plane, [handler_state_binding()])
    kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme")


def test_the_spec_is_frozen_once_deleted_and_cleanup_uses_the_last_one_reconciled(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    account = account_of(m)
    policy = grant(kubeconfig, [namespace], account)
    operator.inject_aws_fault(
        pathPattern="DeleteStack", status=400, count=10_000
    )  # cleanup waits on the stack
    try:
        assert apply(user, m).returncode == 0
        obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
        record = record_of(kubeconfig, obj["metadata"]["uid"])
        assert record is not None and record["spec"]["connector"]["aws"]["credentials"]["roleArn"].endswith(
            "role/defender-onboarding"
        )
        kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_for(lambda: connector(sandbox, m).status_code == 404, 30, "cleanup to reach the stack")
        admin_role = f"arn:aws:iam::{account}:role/OrganizationAccountAccessRole"
        patch = json.dumps({"spec": {"aws": {"credentials": {"roleArn": admin_role}}}})
        refused = kubectl(user, "patch", "awsc", "-n", namespace, "acme", "--type=merge", "-p", patch)
        assert refused.returncode != 0 and "spec is frozen" in refused.stderr, refused.stderr
        # Without the admission policy (not installed, or failing open), the patch lands: the operator ignores it.
        kubectl(kubeconfig, "delete", "validatingadmissionpolicybinding", FROZEN_NAME, check=True)
        try:  # the API server drops the binding from its cache a moment later
            wait_for(
                lambda: (
                    kubectl(
                        user, "patch", "awsc", "-n", namespace, "acme", "--type=merge", "-p", patch
                    ).returncode
                    == 0
                ),
                30,
                "the patch to land without the frozen-spec policy",
            )
        finally:
            apply_admission(sandbox.control_plane, [frozen_binding()])
        operator.reset_aws_operations()
        operator.clear_aws_faults()
        wait_gone(kubeconfig, namespace, "acme", timeout=60)
        assert operator.aws_operations().get("AssumeRole", 0) == 0, "cleanup assumed the role patched in"
        assert left_behind(sandbox, m) == {} and record_of(kubeconfig, obj["metadata"]["uid"]) is None
    finally:
        operator.clear_aws_faults()
        revoke(kubeconfig, policy)


def test_a_first_write_announced_and_never_made_leaves_a_delete_nothing_to_wait_on(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Found by the suite on a busy machine: a pass announces its first AWS write (the record, then
    status.firstCloudWrite), the object is deleted meanwhile, and the write is refused (AccessDenied). The pass
    withdraws the record and the claim, but cleanup decided from the handler's body, the deletion event's, which
    still claimed the write: it signed in with an identity that never worked, was blocked, and wrote that stale claim
    back, so the delete never finished. Cleanup now reads the status the object has when the pass is over."""
    namespace = bare_namespace(kubeconfig)
    m = manifest(namespace)
    policy = grant(kubeconfig, [namespace], account_of(m))
    paused_first(kubeconfig, m)  # then a new generation, announced (a new object's pass is not)
    # every AssumeRole is held 6 s, then refused: the write the pass announced never happens
    operator.inject_aws_fault(
        pathPattern="AssumeRole", latency=6, status=403, code="AccessDenied", count=1000
    )
    try:
        resumed_with_a_change(kubeconfig, namespace, "acme")

        def announced() -> str | None:
            obj = get_object(kubeconfig, namespace, "acme") or {}
            written = ((obj.get("status") or {}).get("firstCloudWrite") or {}).get("aws")
            return str(obj["metadata"]["uid"]) if written else None

        uid = wait_for(announced, 30, "the pass to announce its first AWS write")
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, "acme", timeout=60)
    finally:
        operator.clear_aws_faults()
        revoke(kubeconfig, policy)
    assert record_of(kubeconfig, uid) is None


def test_credentials_that_are_not_one_line_of_text_are_refused_with_a_reason_and_no_record(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, tmp_path: Path
) -> None:
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    binary_keys(user, namespace, "binary", tmp_path)
    token = "FQoGZXIvYXdzEJrSECRETTOKEN"
    kubectl(
        user, "create", "secret", "generic", "broken-token", "-n", namespace,
        "--from-literal=accessKeyId=AKIATENANTOWNKEYS", "--from-literal=secretAccessKey=tenant-own-secret-access-key",
        f"--from-literal=sessionToken={token[:10]}\n{token[10:]}", check=True,
    )  # fmt: skip
    azure_app(user, namespace)
    for secret in ("binary", "broken-token"):
        m = manifest(namespace, secret)
        m["spec"]["aws"]["credentials"]["secretRef"] = {"name": secret}
        m["spec"]["azure"]["credentialsSecretRef"] = {"name": "azure-app"}
        assert apply(user, m).returncode == 0
        obj = wait_condition(
            kubeconfig, namespace, secret, "Stalled", "True", reason="CredentialsSecretInvalid"
        )
        assert "is not one line of text" in condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert token[10:] not in json.dumps(obj["status"])
        assert (
            "firstCloudWrite" not in obj["status"] and record_of(kubeconfig, obj["metadata"]["uid"]) is None
        )
        kubectl(user, "delete", "awsc", "-n", namespace, secret, "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, secret, timeout=45)
        assert left_behind(sandbox, m) == {}
    assert token[10:] not in operator.log()


def test_a_withdrawn_grant_stops_cleanup_before_any_identity_is_used(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Issue 25: the operator's identities are used in cleanup only while a policy still allows the spec last acted
    on. The grant withdrawn from an onboarded object, its deletion is blocked and says why, and assumes no role."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    account = account_of(m)
    policy = grant(kubeconfig, [namespace], account)
    assert apply(user, m).returncode == 0
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", policy, check=True)
    wait_for(lambda: policy not in effective_policies(kubeconfig), 30, "the grant to be withdrawn")
    request_reconcile(kubeconfig, namespace, "acme")
    wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy")
    operator.reset_aws_operations()  # every pass from here on starts after the withdrawal
    kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    blocked = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="CleanupBlocked")
    assert "is not allowed" in condition(blocked, "Stalled")["message"]  # type: ignore[index]
    assert operator.aws_operations().get("AssumeRole", 0) == 0, "cleanup used the identity without a grant"
    assert connector(sandbox, m).status_code == 200 and left_behind(sandbox, m) != {}
    # The way out the message names (an administrator here): let the object go; its resources stay, as said.
    kubectl(
        kubeconfig, "patch", "awsc", "-n", namespace, "acme", "--type=json",
        "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]', check=True,
    )  # fmt: skip
    wait_gone(kubeconfig, namespace, "acme")


def test_a_grant_given_back_while_no_operator_ran_lets_a_blocked_cleanup_go_on_at_start(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """A blocked cleanup waits resyncSeconds (300 s in this module) for its next try, a delay Kopf keeps on the object;
    a change of the grants cuts it short. A change made while no replica led (an upgrade, an outage) has no event of
    its own: a leader's first policy event counts as a change, so the blocked cleanup goes on at once then too."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    account = account_of(m)
    policy = grant(kubeconfig, [namespace], account)
    try:
        assert apply(user, m).returncode == 0
        wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
        change_grant(kubeconfig, policy, accountIds=["000000000000"])
        kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="CleanupBlocked")

        # Kopf keeps the handler's next try on the object, written after the status
        def retry_delayed() -> bool:
            obj = get_object(kubeconfig, namespace, "acme") or {}
            state = (obj["metadata"].get("annotations") or {}).get("defender-operator.io/cleanup", "{}")
            return bool(json.loads(state).get("delayed"))

        wait_for(retry_delayed, 30, "the cleanup's next try to be put off")
        operator.kill()  # no replica leads while the grant is given back
        patch = json.dumps({"spec": {"aws": {"accountIds": [account]}}})
        kubectl(
            kubeconfig, "patch", "clusteronboardingpolicy", policy, "--type=merge", "-p", patch, check=True
        )
        operator.start()
        wait_gone(kubeconfig, namespace, "acme", timeout=90)
        assert left_behind(sandbox, m) == {}
    finally:
        revoke(kubeconfig, policy)


def test_a_trailing_newline_in_a_credential_is_taken_off(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    # Every value as `echo` leaves it; the key id and the session token go into HTTP headers, where a newline is
    # refused by the HTTP library before any request (a crash, not a cloud error, before the fix).
    tenant_secrets(
        user,
        namespace,
        accessKeyId="AKIATENANTOWNKEYS\n",
        secretAccessKey="tenant-own-secret-access-key\n",
        sessionToken="tenant-own-session-token\n",
    )
    m = own_secrets(manifest(namespace))
    assert apply(user, m).returncode == 0
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme")
    assert left_behind(sandbox, m) == {}


# --- 4. deleting a namespace ------------------------------------------------------------------------------------------------


def test_deleting_a_namespace_cleans_up_both_clouds_with_the_namespaces_own_secrets(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """The namespace controller (kube-controller-manager) deletes the AWSConnector and its Secrets in one sweep; the
    Secrets are held until cleanup has used them, and the namespace goes once cleanup is done."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    tenant_secrets(user, namespace)
    m = own_secrets(manifest(namespace))
    assert apply(user, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    assert obj["status"]["allowedBy"] == "Default"
    secret = json.loads(
        kubectl(user, "get", "secret", "aws-keys", "-n", namespace, "-o", "json", check=True).stdout
    )
    assert f"defender-operator.io/in-use-by-{obj['metadata']['uid']}" in secret["metadata"]["finalizers"]
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=True)
    wait_for(
        lambda: kubectl(kubeconfig, "get", "namespace", namespace).returncode != 0,
        120,
        f"namespace {namespace} to be deleted by the namespace controller",
        interval=1,
    )
    assert left_behind(sandbox, m) == {}
    assert record_of(kubeconfig, obj["metadata"]["uid"]) is None


def test_a_new_object_whose_secret_is_being_deleted_is_stalled_saying_so(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """The campaign's seed 10060: the tenant deletes a Secret an onboarded object holds (it stays Terminating until
    that object's cleanup no longer needs it), then applies a new object that names it. The new object's first
    pass announces its first write, which needs the Secret held for cleanup: that refusal went unhandled ("reconcile
    failed unexpectedly", no status, for ever). It is the object's own Stalled reason now, and nothing is claimed;
    the other Secret it names, held first (in name order), is let go again, as no record names it."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    tenant_secrets(user, namespace)
    first = own_secrets(manifest(namespace, "first"))
    assert apply(user, first).returncode == 0
    wait_condition(kubeconfig, namespace, "first", "Ready", "True")
    mark = len(operator.log())
    kubectl(user, "delete", "secret", "azure-app", "-n", namespace, "--wait=false", check=True)
    second = own_secrets(manifest(namespace, "second"))
    assert apply(user, second).returncode == 0
    obj = wait_condition(
        kubeconfig, namespace, "second", "Stalled", "True", reason="CredentialsSecretDeleting"
    )
    assert "Create the Secret again under another name" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert obj["status"].get("firstCloudWrite") is None
    keys = json.loads(
        kubectl(user, "get", "secret", "aws-keys", "-n", namespace, "-o", "json", check=True).stdout
    )
    assert f"defender-operator.io/in-use-by-{obj['metadata']['uid']}" not in keys["metadata"]["finalizers"]
    assert "reconcile failed unexpectedly" not in operator.log()[mark:]
    for name in ("second", "first"):
        kubectl(user, "delete", "awsc", "-n", namespace, name, "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, name)
    assert left_behind(sandbox, first) == {} and left_behind(sandbox, second) == {}
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


# --- 11. an orphaned connector and a namesake -----------------------------------------------------------------------------


def test_an_orphaned_connector_is_never_taken_over_by_a_namesake_for_another_account(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    first = manifest(namespace, "gamma", deletionPolicy="Orphan")
    assert apply(kubeconfig, first).returncode == 0
    wait_condition(kubeconfig, namespace, "gamma", "Ready", "True")
    left = connector(sandbox, first).json()
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "gamma", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "gamma")
    again = manifest(namespace, "gamma")  # the same name, another account
    assert apply(kubeconfig, again).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "gamma", "Stalled", "True", reason="ConnectorOwnedElsewhere")
    assert "earlier AWSConnector" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    kubectl(
        kubeconfig,
        "annotate",
        "awsc",
        "-n",
        namespace,
        "gamma",
        "defender-operator.io/adopt=true",
        check=True,
    )
    wait_for(
        lambda: (
            "adoption is only"
            in (condition(get_object(kubeconfig, namespace, "gamma"), "Stalled") or {}).get("message", "")
        ),
        30,
        "the adoption of a connector of another account to be refused",
    )
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "gamma", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "gamma")
    kept = connector(sandbox, first)  # Orphan's promise: left as it was, never rewritten, never deleted
    assert kept.status_code == 200 and kept.json()["etag"] == left["etag"]
    assert kept.json()["properties"]["hierarchyIdentifier"] == account_of(first)


def test_adoption_is_a_grant_of_its_own_at_admission_and_in_every_pass(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Issue 25, finding 2: the adopt annotation needs ``adoption: true`` in the policy that allows the object; the
    API server refuses it without, and a pass of an annotated object whose grant lost it is refused too."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    policy = grant(kubeconfig, [namespace], account_of(m))

    def set_adoption(allowed: bool) -> None:
        patch = json.dumps({"spec": {"adoption": allowed}})
        kubectl(
            kubeconfig, "patch", "clusteronboardingpolicy", policy, "--type=merge", "-p", patch, check=True
        )

        def folded() -> bool:
            out = kubectl(
                kubeconfig, "get", "effectiveonboardingpolicy", "effective", "-o", "json", check=True
            ).stdout
            rule = next(r for r in json.loads(out)["spec"]["rules"] if r["policy"] == policy)
            return bool(rule.get("adoption")) == allowed

        wait_for(folded, 30, f"the operator to fold adoption={allowed}")

    try:
        m["metadata"]["annotations"] = {"defender-operator.io/adopt": "true"}
        refused = apply(user, m)
        assert refused.returncode != 0 and "adoption" in refused.stderr, refused.stderr
        assert left_behind(sandbox, m) == {}
        set_adoption(True)
        assert apply(user, m).returncode == 0
        wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
        set_adoption(False)
        request_reconcile(kubeconfig, namespace, "acme")
        obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy")
        assert "adoption is not true" in condition(obj, "Stalled")["message"]  # type: ignore[index]
        set_adoption(True)  # cleanup acts under the grant of what it last acted on
        kubectl(user, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, "acme")
        assert left_behind(sandbox, m) == {}
    finally:
        revoke(kubeconfig, policy)


# --- 12. a tag-only actor -----------------------------------------------------------------------------------------------------


def test_a_tag_only_actor_cannot_make_the_operator_delete_or_rewrite_what_is_not_its_own(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    # Sentinel's provider, and another team's connector of the name this object will use, both there before it.
    iam.create_open_id_connect_provider(
        Url=f"https://{MS_PROVIDER}", ClientIDList=[SENTINEL_AUDIENCE], ThumbprintList=["0" * 40]
    )
    url = connector_url("acme", m["spec"]["azure"]["resourceGroup"])
    theirs = foreign_connector_body(account)
    assert send(arm_client(sandbox), "PUT", url, theirs).status_code == 201
    older_than_skew(time.time())
    m["metadata"]["annotations"] = {"defender-operator.io/paused": "true"}
    assert apply(kubeconfig, m).returncode == 0
    uid = wait_for(
        lambda: (get_object(kubeconfig, namespace, "acme") or {}).get("metadata", {}).get("uid"), 30, "uid"
    )
    ref = f"{operator_instance(kubeconfig)}/{namespace}/acme"
    # The tag-only actor writes this object's full mark onto the other team's connector (tags only: same body).
    forged = {
        **theirs,
        "tags": {**theirs["tags"], OWNER_TAG: ref, OWNER_UID_TAG: uid, "managed-by": "defender-operator"},
    }
    assert send(arm_client(sandbox), "PUT", url, forged).status_code == 200
    etag = connector(sandbox, m).json()["etag"]
    kubectl(
        kubeconfig, "annotate", "awsc", "-n", namespace, "acme", "defender-operator.io/paused-", check=True
    )
    obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="OwnershipDisputed")
    assert "security connector" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert connector(sandbox, m).json()["etag"] == etag  # not rewritten
    # Meanwhile the operator shared Sentinel's provider; the actor now claims it was made by this object, with
    # Sentinel's audience among those the operator added.
    provider = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn(account))
    assert SENTINEL_AUDIENCE in provider["ClientIDList"] and len(provider["ClientIDList"]) > 1
    iam.tag_open_id_connect_provider(
        OpenIDConnectProviderArn=provider_arn(account),
        Tags=[
            {"Key": CREATED_TAG, "Value": ref},
            {"Key": AUDIENCES_TAG, "Value": " ".join(audience_code(a) for a in provider["ClientIDList"])},
        ],
    )
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme", timeout=60)
    kept = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=provider_arn(account))
    assert kept["ClientIDList"] == [SENTINEL_AUDIENCE], "Sentinel's provider lost its audience or more"
    live = connector(sandbox, m)
    assert live.status_code == 200 and live.json()["etag"] == etag, "the other team's connector was deleted"
    assert stacks_of(sandbox, account) == [] and defender_roles(sandbox, account) == []


def operator_instance(kubeconfig: Path) -> str:
    """The operator's installation name in the owner mark: cluster-<uid of kube-system>."""
    found = kubectl(
        kubeconfig, "get", "namespace", "kube-system", "-o", "jsonpath={.metadata.uid}", check=True
    )
    return f"cluster-{found.stdout.strip()}"


# --- 8. organizations are grants of their own -------------------------------------------------------------------------------


def test_organizations_and_member_roles_need_grants_of_their_own(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace)
    policy = grant(kubeconfig, [namespace], account_of(m))
    try:
        m["spec"]["aws"]["organization"] = {"memberProviderRoleName": "OrganizationAccountAccessRole"}
        refused = apply(user, m)
        assert refused.returncode != 0 and "aws.organizations" in refused.stderr, refused.stderr
        change_grant(kubeconfig, policy, organizations=True)
        refused = apply(user, m)
        assert refused.returncode != 0 and "aws.memberRoleNames" in refused.stderr, refused.stderr
        assert left_behind(sandbox, m) == {}
    finally:
        revoke(kubeconfig, policy)


def organization_tenant(
    sandbox: Sandbox, kubeconfig: Path, members: int
) -> tuple[str, Path, dict[str, Any], list[str]]:
    """A tenant's namespace and an organization object of its, onboarding ``members`` member accounts through
    OrganizationAccountAccessRole: (namespace, the tenant's kubeconfig, the manifest, the member accounts)."""
    namespace = bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, namespace)
    m = manifest(namespace, "org")
    ou, accounts = organization_ou(sandbox, account_of(m), members)
    m["spec"]["aws"]["organization"] = {
        "organizationalUnitIds": [ou],
        "memberProviderRoleName": "OrganizationAccountAccessRole",
    }
    return namespace, user, m, list(accounts)


def member_grant(kubeconfig: Path, namespace: str, m: dict[str, Any], members: list[str]) -> str:
    """An organizations grant for the object's management account and ``members``, with the member role."""
    return grant(
        kubeconfig,
        [namespace],
        account_of(m),
        accountIds=[account_of(m), *members],
        organizations=True,
        memberRoleNames=["OrganizationAccountAccessRole"],
    )


def test_a_member_account_outside_the_grants_accounts_is_never_assumed_into(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Issue 25, finding 8: an organizations grant with member roles reaches only the member accounts the grant's
    accountIds list. The other member is reported failing with the reason, and nothing is made or removed there
    through its role, onboarding or deletion; the listed member gets its identity provider."""
    namespace, user, m, (granted, outside) = organization_tenant(sandbox, kubeconfig, 2)
    policy = member_grant(kubeconfig, namespace, m, [granted])
    try:
        assert apply(user, m).returncode == 0

        def failing() -> list[dict[str, Any]] | None:
            obj = get_object(kubeconfig, namespace, "org") or {}
            providers = obj.get("status", {}).get("organization", {}).get("memberProviders", {})
            return providers.get("failing") or None if providers.get("ready") == 1 else None

        [reported] = wait_for(failing, 120, "the granted member ready and the other one failing")
        assert reported["accountId"] == outside and "aws.accountIds" in reported["reason"], reported
        assert [p["Arn"] for p in providers_in(sandbox, granted)] == [provider_arn(granted)]
        assert providers_in(sandbox, outside) == []
        kubectl(user, "delete", "awsc", "-n", namespace, "org", "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, "org", timeout=120)
        assert providers_in(sandbox, granted) == [] and providers_in(sandbox, outside) == []
    finally:
        revoke(kubeconfig, policy)


def test_a_member_account_taken_out_of_the_grant_after_it_was_reached_blocks_the_delete_naming_the_grant(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """A member reached through the member role, then taken out of the grant's accountIds: cleanup does not assume
    the role there (the grant is checked at cleanup too), leaves its provider as it is, and says what fixes it: the
    grant, not the role. The grant given back, cleanup goes on at once (not at the next resync, 300 s in this
    module): the member's provider is released and the object goes."""
    namespace, user, m, (member,) = organization_tenant(sandbox, kubeconfig, 1)
    policy = member_grant(kubeconfig, namespace, m, [member])
    try:
        assert apply(user, m).returncode == 0
        wait_condition(kubeconfig, namespace, "org", "Ready", "True", timeout=120)
        assert [p["Arn"] for p in providers_in(sandbox, member)] == [provider_arn(member)]
        change_grant(kubeconfig, policy, accountIds=[account_of(m)])
        kubectl(user, "delete", "awsc", "-n", namespace, "org", "--wait=false", check=True)
        blocked = wait_condition(
            kubeconfig, namespace, "org", "Stalled", "True", reason="CleanupBlocked", timeout=120
        )
        message = condition(blocked, "Stalled")["message"]
        assert f"Allow {member} in the aws.accountIds" in message and "Make the role usable" not in message, (
            message
        )
        assert [p["Arn"] for p in providers_in(sandbox, member)] == [provider_arn(member)]
        change_grant(kubeconfig, policy, accountIds=[account_of(m), member])
        wait_gone(kubeconfig, namespace, "org", timeout=90)
        assert providers_in(sandbox, member) == []
    finally:
        revoke(kubeconfig, policy)


def providers_in(sandbox: Sandbox, account: str) -> list[dict[str, Any]]:
    providers: list[dict[str, Any]] = aws_in(sandbox, account, "iam").list_open_id_connect_providers()[
        "OpenIDConnectProviderList"
    ]
    return providers


# --- low: the loser of a conflict is looked at again when the winner goes -----------------------------------------------------


def test_the_loser_of_a_conflict_is_looked_at_again_as_soon_as_the_winner_goes(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    winner = manifest(namespace, "winner")
    assert apply(kubeconfig, winner).returncode == 0
    wait_condition(kubeconfig, namespace, "winner", "Ready", "True")
    loser = manifest(namespace, "loser", account=account_of(winner))
    assert apply(kubeconfig, loser).returncode == 0
    wait_condition(kubeconfig, namespace, "loser", "Stalled", "True", reason="ConnectorConflict")
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "winner", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "winner")
    # The resync here is 300 s: Ready within a minute comes from the winner's deletion, not from a periodic pass.
    wait_condition(kubeconfig, namespace, "loser", "Ready", "True", timeout=60)
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "loser", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "loser")


def test_an_object_with_credentials_that_never_work_holds_an_account_only_for_the_claim_grace(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, tmp_path: Path
) -> None:
    """Any tenant may create an object for any account with a Secret of its own. One that never works, created
    before the object of the team the admin granted the account, held the account for as long as it existed (the
    granted object Stalled, ConnectorConflict). It now holds it for the claim grace only; once the granted object has
    written, the squatter stays out even with credentials that work."""
    squatting, granted = bare_namespace(kubeconfig), bare_namespace(kubeconfig)
    user = tenant(sandbox, kubeconfig, squatting)
    binary_keys(user, squatting, "aws-keys", tmp_path)
    azure_app(user, squatting)
    victim = manifest(granted, "payments")
    account = account_of(victim)
    squat = own_secrets(manifest(squatting, "squat", account=account))
    policy = grant(kubeconfig, [granted], account)
    try:
        assert apply(user, squat).returncode == 0
        held = wait_condition(
            kubeconfig, squatting, "squat", "Stalled", "True", reason="CredentialsSecretInvalid"
        )
        # created in a later second (creationTimestamp's resolution), so the squatter is the older object
        created = stamp_seconds(held["metadata"]["creationTimestamp"])
        wait_for(lambda: time.time() >= created + 1.5, 5, "the next second")
        assert apply(kubeconfig, victim).returncode == 0
        ready = wait_condition(kubeconfig, granted, "payments", "Ready", "True", timeout=CLAIM_GRACE + 120)
        # not before the squatter's claim lapsed (the API server's and the operator's clocks are this machine's)
        lapsed = stamp_seconds(held["metadata"]["creationTimestamp"]) + CLAIM_GRACE
        assert stamp_seconds(condition(ready, "Ready")["lastTransitionTime"]) >= lapsed - 1  # type: ignore[index]
        squatter = get_object(kubeconfig, squatting, "squat")
        assert squatter is not None and "firstCloudWrite" not in squatter["status"]
        assert record_of(kubeconfig, squatter["metadata"]["uid"]) is None
        # the squatter's credentials work now: the object that wrote keeps the account
        kubectl(
            user, "create", "secret", "generic", "working-keys", "-n", squatting,
            "--from-literal=accessKeyId=AKIATENANTOWNKEYS", "--from-literal=secretAccessKey=tenant-own-secret", check=True,
        )  # fmt: skip
        kubectl(
            user, "patch", "awsc", "-n", squatting, "squat", "--type=merge",
            "-p", json.dumps({"spec": {"aws": {"credentials": {"secretRef": {"name": "working-keys"}}}}}), check=True,
        )  # fmt: skip
        obj = wait_condition(kubeconfig, squatting, "squat", "Stalled", "True", reason="ConnectorConflict")
        message = condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert "an object in another namespace already onboards" in message and granted not in message, (
            message
        )
        assert "firstCloudWrite" not in obj["status"]
        assert len(stacks_of(sandbox, account)) == 1 and connector(sandbox, squat).status_code == 404
        kubectl(user, "delete", "awsc", "-n", squatting, "squat", "--wait=false", check=True)
        wait_gone(kubeconfig, squatting, "squat")
        wait_condition(kubeconfig, granted, "payments", "Ready", "True")
        kubectl(kubeconfig, "delete", "awsc", "-n", granted, "payments", "--wait=false", check=True)
        wait_gone(kubeconfig, granted, "payments")
        assert left_behind(sandbox, victim) == {}
    finally:
        revoke(kubeconfig, policy)


def stamp_seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def test_a_namespace_relabelled_out_of_and_back_into_a_grant_is_acted_on_at_once(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Policies select namespaces by their labels: a label put on or taken off gives or takes the grant now, not at
    the objects' next resync (300 s in this module), and the grant holds where the namespaces' last list has the
    label too (listed again every 2 s here, and at once on a relabel that changes a selection)."""
    m = manifest(namespace)  # the namespace has no opt-out label: the tests' policy selects it
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    kubectl(kubeconfig, "label", "namespace", namespace, f"{OPT_OUT}=true", check=True)
    obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy")
    stalled = condition(obj, "Stalled") or {}
    assert f"no ClusterOnboardingPolicy selects namespace {namespace}" in stalled["message"]
    kubectl(kubeconfig, "label", "namespace", namespace, f"{OPT_OUT}-", check=True)
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme")
    assert stacks_of(sandbox, account_of(m)) == [] and connector(sandbox, m).status_code == 404
    assert "could not be listed again" not in operator.log()
