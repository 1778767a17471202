"""Issue 13: every EKS cluster in the connector's regions on status, with whether Defender's agentless discovery
reaches it and the fix where it cannot; opted in, the operator creates the discovery role's access entry, and removes
only the entries it created (the AWS emulator answers the EKS access-entry API: sandbox/aws/eks_fixes.py)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.kube import apply, get_object, kubectl, wait_for
from tests.support.onboarding import aws_in, delete, manifest, request_reconcile, stacks_of
from tests.support.operator import OperatorProcess, changed_with_status_lost, module_operator, wait_condition

pytestmark = pytest.mark.integration

ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "eks-operator") as running:
        yield running


def cluster(sandbox: Sandbox, account: str, region: str, name: str, mode: str) -> None:
    aws_in(sandbox, account, "eks", region).create_cluster(
        name=name,
        roleArn=f"arn:aws:iam::{account}:role/eks-cluster",
        resourcesVpcConfig={"subnetIds": []},
        accessConfig={"authenticationMode": mode, "bootstrapClusterCreatorAdminPermissions": False},
    )


def discovery_role(account: str) -> str:
    return f"arn:aws:iam::{account}:role/MDCContainersAgentlessDiscoveryK8sRole"


def entries(sandbox: Sandbox, account: str, region: str, name: str) -> list[str]:
    return list(
        aws_in(sandbox, account, "eks", region).list_access_entries(clusterName=name)["accessEntries"]
    )


def eks_status(kubeconfig: Path, namespace: str, name: str, total: int) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        eks = ((get_object(kubeconfig, namespace, name) or {}).get("status") or {}).get("eks")
        return eks if eks and eks.get("total") == total else None

    found: dict[str, Any] = wait_for(seen, 60, f"{total} EKS clusters on status")
    return found


def by_name(eks: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in eks["clusters"]}


def test_clusters_in_two_regions_are_granted_reported_and_cleaned_up(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace, "eks")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["regions"] = ["us-east-1", "eu-west-1"]
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "alpha", "API")
    cluster(sandbox, account, "us-east-1", "legacy", "CONFIG_MAP")
    cluster(sandbox, account, "eu-west-1", "beta", "API_AND_CONFIG_MAP")
    platform = f"arn:aws:iam::{account}:role/platform-admins"  # someone else's entry on the same cluster
    aws_in(sandbox, account, "eks").create_access_entry(clusterName="alpha", principalArn=platform)
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "eks", "Ready", "True", timeout=120)

    eks = eks_status(kubeconfig, namespace, "eks", 3)
    assert (eks["reachable"], eks["needsAction"]) == (2, 1)
    clusters = by_name(eks)
    assert clusters["alpha"]["access"] == clusters["beta"]["access"] == "Granted"
    legacy = clusters["legacy"]
    assert legacy["access"] == "ConfigMapOnly" and legacy["authenticationMode"] == "CONFIG_MAP"
    assert "eksctl create iamidentitymapping --cluster legacy --region us-east-1" in legacy["fix"]
    assert eks["clusters"][0]["name"] == "legacy"  # what needs action comes first
    role = discovery_role(account)
    for region, name in (("us-east-1", "alpha"), ("eu-west-1", "beta")):
        client = aws_in(sandbox, account, "eks", region)
        policies = client.list_associated_access_policies(clusterName=name, principalArn=role)
        assert [p["policyArn"] for p in policies["associatedAccessPolicies"]] == [ADMIN_POLICY]
        assert policies["associatedAccessPolicies"][0]["accessScope"]["type"] == "cluster"
        tags = client.describe_access_entry(clusterName=name, principalArn=role)["accessEntry"]["tags"]
        assert tags["defender-operator-owner"].endswith(f"/{namespace}/eks")

    cluster(sandbox, account, "eu-west-1", "gamma", "API")  # a cluster created later
    request_reconcile(kubeconfig, namespace, "eks")
    assert by_name(eks_status(kubeconfig, namespace, "eks", 4))["gamma"]["access"] == "Granted"

    delete(kubeconfig, namespace, "eks")
    assert entries(sandbox, account, "us-east-1", "alpha") == [platform]
    assert entries(sandbox, account, "eu-west-1", "beta") == []
    assert entries(sandbox, account, "eu-west-1", "gamma") == []


def test_report_names_the_fix_and_a_switch_back_removes_only_the_operators_entries(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace, "report")
    account = str(m["spec"]["aws"]["accountId"])
    cluster(sandbox, account, "us-east-1", "one", "API")
    cluster(sandbox, account, "us-east-1", "two", "API")
    role = discovery_role(account)
    # "one" already lets Defender in (an entry someone made for the discovery role, by hand or Defender itself)
    aws_in(sandbox, account, "eks").create_access_entry(clusterName="one", principalArn=role)
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "report", "Ready", "True", timeout=120)
    clusters = by_name(eks_status(kubeconfig, namespace, "report", 2))
    assert clusters["one"]["access"] == "AccessEntry" and clusters["one"].get("fix") is None
    assert clusters["two"]["access"] == "CanBeCreated"
    assert "spec.aws.eksAccessEntries: Manage" in clusters["two"]["fix"]
    assert (
        f"aws eks create-access-entry --cluster-name two --region us-east-1 --principal-arn {role}"
        in (clusters["two"]["fix"])
    )
    assert entries(sandbox, account, "us-east-1", "two") == []  # Report writes nothing

    def access_of(name: str, wanted: str) -> Any:
        def check() -> bool:
            eks = ((get_object(kubeconfig, namespace, "report") or {}).get("status") or {}).get("eks") or {}
            return by_name(eks).get(name, {}).get("access") == wanted

        return wait_for(check, 60, f"{name} to be {wanted}")

    def switch(mode: str) -> None:
        patch = json.dumps({"spec": {"aws": {"eksAccessEntries": mode}}})
        kubectl(
            kubeconfig, "patch", "awsc", "-n", namespace, "report", "--type=merge", "-p", patch, check=True
        )

    switch("Manage")
    access_of("two", "Granted")
    assert by_name(eks_status(kubeconfig, namespace, "report", 2))["one"]["access"] == "AccessEntry"
    switch("Report")
    access_of("two", "CanBeCreated")
    assert entries(sandbox, account, "us-east-1", "two") == []
    assert entries(sandbox, account, "us-east-1", "one") == [role]  # not the operator's: left alone

    delete(kubeconfig, namespace, "report")
    assert entries(sandbox, account, "us-east-1", "one") == [role]


def test_killed_right_after_creating_an_access_entry(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The entry exists (with the owner tags, given in the same call) but has no access policy, and the status
    never said Granted: the restarted operator recognises its entry, completes it, and cleanup removes it."""
    m = manifest(namespace, "killed")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "delta", "API")
    operator.kill_after("aws", r"^/clusters/delta/access-entries$", "POST")
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed")
    role = discovery_role(account)
    client = aws_in(sandbox, account, "eks")
    assert entries(sandbox, account, "us-east-1", "delta") == [role]
    assert (
        client.list_associated_access_policies(clusterName="delta", principalArn=role)[
            "associatedAccessPolicies"
        ]
        == []
    )
    operator.start()
    assert by_name(eks_status(kubeconfig, namespace, "killed", 1))["delta"]["access"] == "Granted"
    policies = client.list_associated_access_policies(clusterName="delta", principalArn=role)
    assert [p["policyArn"] for p in policies["associatedAccessPolicies"]] == [ADMIN_POLICY]
    delete(kubeconfig, namespace, "killed")
    assert entries(sandbox, account, "us-east-1", "delta") == []


def test_turning_discovery_off_removes_the_operators_entries(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace, "off")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    # 50 clusters that need action come first on the bounded list, so the one with our entry is not listed there:
    # only the unbounded count tells that the object made an entry to remove.
    for i in range(50):
        cluster(sandbox, account, "us-east-1", f"cm-{i:02}", "CONFIG_MAP")
    cluster(sandbox, account, "us-east-1", "epsilon", "API")
    assert apply(kubeconfig, m).returncode == 0
    eks = eks_status(kubeconfig, namespace, "off", 51)
    assert eks["granted"] == 1 and "epsilon" not in by_name(eks), eks
    assert [e for e in entries(sandbox, account, "us-east-1", "epsilon") if e == discovery_role(account)]
    m["spec"]["plans"] = {
        "containers": {"kubernetesDiscovery": {"enabled": False}}
    }  # Defender CSPM is off too
    assert apply(kubeconfig, m).returncode == 0

    def gone() -> bool:
        status = (get_object(kubeconfig, namespace, "off") or {}).get("status") or {}
        return "eks" not in status and entries(sandbox, account, "us-east-1", "epsilon") == []

    wait_for(gone, 60, "the entry and status.eks to go")
    delete(kubeconfig, namespace, "off")


def test_turning_discovery_off_removes_the_entries_the_record_names_when_the_status_lost_them(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The campaign's seed 67071: discovery turned off by a plan change right after onboarding, and the pass that met
    the change started from a status without the entry it had just made (a status written from an older copy of the
    object loses it): the entry stayed for good, with the object Ready. The record, which names every entry before
    it is made, is the authority. Here the status loses it while the operator is down, as such a write leaves it."""
    m = manifest(namespace, "lost")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "zeta", "API")
    assert apply(kubeconfig, m).returncode == 0
    assert eks_status(kubeconfig, namespace, "lost", 1)["granted"] == 1
    assert discovery_role(account) in entries(sandbox, account, "us-east-1", "zeta")
    m["spec"]["plans"] = {
        "containers": {"kubernetesDiscovery": {"enabled": False}}
    }  # Defender CSPM is off too
    changed_with_status_lost(operator, kubeconfig, m, "/status/eks")
    generation = get_object(kubeconfig, namespace, "lost")["metadata"]["generation"]  # type: ignore[index]

    def done() -> bool:
        status = (get_object(kubeconfig, namespace, "lost") or {}).get("status") or {}
        return status.get("observedGeneration") == generation and discovery_role(account) not in entries(
            sandbox, account, "us-east-1", "zeta"
        )

    wait_for(done, 60, "the entry the record names to go")
    wait_condition(kubeconfig, namespace, "lost", "Ready", "True")
    delete(kubeconfig, namespace, "lost")


def test_an_identity_without_eks_permissions_keeps_onboarding_ready_and_says_why(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """EKS refuses the operator (its role lacks the EKS actions): onboarding is Ready all the same, status.eks says
    what EKS answered, and once EKS answers again a requested reconcile reports the clusters."""
    m = manifest(namespace, "denied")
    account = str(m["spec"]["aws"]["accountId"])
    cluster(sandbox, account, "us-east-1", "zeta", "API")
    operator.inject_aws_fault(
        pathPattern=r"^/clusters", method="GET", status=403, code="AccessDeniedException", count=1000
    )
    try:
        assert apply(kubeconfig, m).returncode == 0
        obj = wait_condition(kubeconfig, namespace, "denied", "Ready", "True", timeout=120)

        def refused() -> dict[str, Any] | None:
            eks = ((get_object(kubeconfig, namespace, "denied") or {}).get("status") or {}).get("eks")
            return eks if eks and eks.get("error") else None

        eks = wait_for(refused, 60, "status.eks.error")
        assert eks["error"].startswith("eks:list_clusters was denied"), eks
        assert obj["status"]["aws"]["stackStatus"] == "CREATE_COMPLETE"
    finally:
        operator.clear_aws_faults()
    request_reconcile(kubeconfig, namespace, "denied")
    eks = eks_status(kubeconfig, namespace, "denied", 1)
    assert eks.get("error") is None and by_name(eks)["zeta"]["access"] == "CanBeCreated", eks
    delete(kubeconfig, namespace, "denied")


def test_a_delete_while_an_entry_is_being_created_removes_it(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The object is deleted while its pass waits on CreateAccessEntry (held 3 s by the proxy): cleanup waits for
    the pass, then finds the new entry in the cluster (not through status, which never said Granted) and removes it."""
    m = manifest(namespace, "racing")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "omega", "API")
    operator.reset_aws_operations()
    operator.inject_aws_fault(pathPattern=r"^/clusters/omega/access-entries$", method="POST", latency=3.0)
    try:
        assert apply(kubeconfig, m).returncode == 0
        wait_for(lambda: operator.aws_operations().get("GET /clusters"), 120, "the pass to reach EKS")
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "racing", "--wait=false", check=True)
        wait_for(lambda: get_object(kubeconfig, namespace, "racing") is None, 120, "the object to go")
    finally:
        operator.clear_aws_faults()
    assert (
        operator.aws_operations().get("CreateAccessEntry", 0)
        + operator.aws_operations().get("POST /clusters/omega/access-entries", 0)
        == 1
    ), operator.aws_operations()
    assert entries(sandbox, account, "us-east-1", "omega") == []


def test_an_entry_another_actor_makes_while_the_operator_creates_one_is_never_given_cluster_admin(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25 (low): another actor creates the discovery role's entry between the operator's read and its own
    create (held 8 s by the proxy). The operator's create fails with ResourceInUseException; the entry carries no mark
    of the object, so the operator associates no access policy with it (cluster-admin is given only to an entry of
    its own), reports it as someone else's, and leaves it on delete."""
    m = manifest(namespace, "raced")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "sigma", "API")
    role, client = discovery_role(account), aws_in(sandbox, account, "eks")
    operator.reset_aws_operations()
    operator.inject_aws_fault(pathPattern=r"^/clusters/sigma/access-entries$", method="POST", latency=8.0)
    try:
        assert apply(kubeconfig, m).returncode == 0
        wait_for(lambda: operator.aws_faulted() >= 1, 120, "the operator's CreateAccessEntry to be held")
        # raises ResourceInUseException (and so fails the test) if the operator's create got there first
        client.create_access_entry(clusterName="sigma", principalArn=role, tags={"team": "platform"})
        wait_for(
            lambda: operator.aws_operations().get("POST /clusters/sigma/access-entries"),
            60,
            "the operator's held create to reach the emulator",
        )
    finally:
        operator.clear_aws_faults()
    assert by_name(eks_status(kubeconfig, namespace, "raced", 1))["sigma"]["access"] == "AccessEntry"
    wait_condition(kubeconfig, namespace, "raced", "Ready", "True", timeout=120)
    assert (
        client.list_associated_access_policies(clusterName="sigma", principalArn=role)[
            "associatedAccessPolicies"
        ]
        == []
    ), "cluster-admin given to an entry another actor made"
    assert client.describe_access_entry(clusterName="sigma", principalArn=role)["accessEntry"]["tags"] == {
        "team": "platform"
    }
    delete(kubeconfig, namespace, "raced")
    assert entries(sandbox, account, "us-east-1", "sigma") == [role]


def test_entries_in_a_region_dropped_from_the_spec_go_at_once(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25: a region taken out of spec.aws.regions used to keep this object's entries for its life and after."""
    m = manifest(namespace, "dropped")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["regions"] = ["us-east-1", "eu-west-1"]
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "kept", "API")
    cluster(sandbox, account, "eu-west-1", "dropped", "API")
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "dropped", "Ready", "True", timeout=120)
    eks_status(kubeconfig, namespace, "dropped", 2)
    assert entries(sandbox, account, "eu-west-1", "dropped") == [discovery_role(account)]
    m["spec"]["aws"]["regions"] = ["us-east-1"]
    assert apply(kubeconfig, m).returncode == 0
    wait_for(
        lambda: entries(sandbox, account, "eu-west-1", "dropped") == [],
        60,
        "the dropped region's entry to go",
    )
    assert entries(sandbox, account, "us-east-1", "kept") == [discovery_role(account)]
    delete(kubeconfig, namespace, "dropped")
    assert entries(sandbox, account, "us-east-1", "kept") == []


def test_the_record_names_only_regions_where_entries_were_made(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25: every region of the spec was recorded (with regions: [], every region of the partition), and
    cleanup lists clusters in each recorded region, so one it cannot read (an opt-in region not enabled) blocked the
    delete for ever. Only the regions where this object made an entry are recorded, so only those are visited."""
    m = manifest(namespace, "recorded")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["regions"] = ["us-east-1", "eu-west-1", "ap-southeast-2"]
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "eu-west-1", "only", "API")
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "recorded", "Ready", "True", timeout=120)
    eks_status(kubeconfig, namespace, "recorded", 1)
    uid = get_object(kubeconfig, namespace, "recorded")["metadata"]["uid"]  # type: ignore[index]
    record = json.loads(kubectl(kubeconfig, "get", "onboardingrecord", uid, "-o", "json", check=True).stdout)
    assert record["spec"]["eksRegions"] == ["eu-west-1"]
    delete(kubeconfig, namespace, "recorded")
    assert entries(sandbox, account, "eu-west-1", "only") == []


def test_an_entry_made_by_hand_is_never_the_operators_whatever_tags_it_carries(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """An adversarial review's find (issue 25): the operator took an access entry for its own when it carried the
    object's mark and postdated its first write. A cluster owner following the fix status prints makes exactly such
    an entry by hand, and anyone who may tag can put the mark on it: the operator then removed it (Report) or
    deleted it on cleanup. Only an entry the record named before it was made is the operator's."""
    m = manifest(namespace, "forged")
    account = str(m["spec"]["aws"]["accountId"])
    cluster(sandbox, account, "us-east-1", "owned", "API")
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "forged", "Ready", "True", timeout=120)
    assert by_name(eks_status(kubeconfig, namespace, "forged", 1))["owned"]["access"] == "CanBeCreated"
    mark = {
        t["Key"]: t["Value"]
        for t in stacks_of(sandbox, account)[0]["Tags"]
        if t["Key"].startswith("defender-operator")
    }
    role = discovery_role(account)
    aws_in(sandbox, account, "eks").create_access_entry(clusterName="owned", principalArn=role, tags=mark)
    request_reconcile(kubeconfig, namespace, "forged")

    def reported() -> bool:
        eks = ((get_object(kubeconfig, namespace, "forged") or {}).get("status") or {}).get("eks") or {}
        return by_name(eks).get("owned", {}).get("access") == "AccessEntry"

    wait_for(reported, 60, "the hand-made entry reported as someone else's")
    assert entries(sandbox, account, "us-east-1", "owned") == [role]
    delete(kubeconfig, namespace, "forged")
    assert entries(sandbox, account, "us-east-1", "owned") == [role]


def test_with_terraform_the_entries_the_operator_made_still_go_on_delete(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25: in Terraform mode cleanup returned before removing the access entries the operator had made."""
    m = manifest(
        namespace,
        "tf",
        plans={"servers": {"enabled": False}, "databases": {"enabled": False}},
        deployment={"method": "Terraform"},
    )
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "tf", "API")
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "tf", "AWSReady", "False", reason="AwaitingTerraform")
    missing = condition_message(obj, "AWSReady").split("missing roles: ", 1)[1].split(", ")
    iam = aws_in(sandbox, account, "iam")
    for role in missing:  # what the user's terraform apply makes
        iam.create_role(
            RoleName=role, AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []})
        )
    request_reconcile(kubeconfig, namespace, "tf")
    wait_condition(kubeconfig, namespace, "tf", "Ready", "True")
    eks_status(kubeconfig, namespace, "tf", 1)
    assert entries(sandbox, account, "us-east-1", "tf") == [discovery_role(account)]
    delete(kubeconfig, namespace, "tf")
    assert entries(sandbox, account, "us-east-1", "tf") == []
    assert iam.get_role(RoleName=missing[0])  # Terraform's roles are Terraform's to destroy


def condition_message(obj: dict[str, Any], kind: str) -> str:
    return str(next(c["message"] for c in obj["status"]["conditions"] if c["type"] == kind))


def test_an_access_entry_refused_for_a_passing_reason_is_made_soon_not_on_the_hourly_check(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The campaign's seed 68051: EKS dropped the connection of every CreateAccessEntry of a new object's first pass,
    more times than the SDK retries. Onboarding was Ready with status.eks.error, and EKS was looked at again only on
    the next deep pass, which a Ready object has every deep_check_seconds (15 minutes here): the entry stayed missing
    long after EKS answered again. A failure that passes now brings the next deep pass with backoff."""
    m = manifest(namespace, "dropped")
    account = str(m["spec"]["aws"]["accountId"])
    m["spec"]["aws"]["eksAccessEntries"] = "Manage"
    cluster(sandbox, account, "us-east-1", "kappa", "API")
    operator.reset_aws_operations()
    # more than one pass's SDK retries: the first pass fails for sure, and the fault ends by itself
    operator.inject_aws_fault(
        pathPattern=r"^/clusters/kappa/access-entries$", method="POST", drop=True, count=8
    )
    try:
        assert apply(kubeconfig, m).returncode == 0
        wait_for(lambda: operator.aws_faulted() >= 8, 120, "every dropped CreateAccessEntry")
    finally:
        operator.clear_aws_faults()

    def granted() -> bool:
        eks = ((get_object(kubeconfig, namespace, "dropped") or {}).get("status") or {}).get("eks") or {}
        return any(c["name"] == "kappa" and c["access"] == "Granted" for c in eks.get("clusters") or [])

    wait_for(granted, 90, "the entry Granted once EKS answers again")  # 15 minutes without the fix
    assert entries(sandbox, account, "us-east-1", "kappa") == [discovery_role(account)]
    delete(kubeconfig, namespace, "dropped")
    assert entries(sandbox, account, "us-east-1", "kappa") == []
