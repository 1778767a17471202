"""Who may use the operator's identities: the decision the operator makes before any cloud call."""

from typing import Any

from defender_operator.api.policy import ClusterOnboardingPolicySpec, effective_rule, glob_regex
from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.reconcile.tenancy import DEFAULT, admit, admit_in_views, admit_left_behind, narrower
from tests.support.manifests import base_manifest

X, Y = "111122223333", "444455556666"
ROLE_X = f"arn:aws:iam::{X}:role/defender-onboarding"


def spec(
    account: str = X, aws: dict[str, Any] | None = None, azure_secret: bool = False, **azure: str
) -> AWSConnectorSpec:
    m = base_manifest(account=account)["spec"]
    if aws is not None:
        m["aws"]["credentials"] = aws
    if azure_secret:
        m["azure"]["credentialsSecretRef"] = {"name": "azure"}
    m["azure"].update(azure)
    return AWSConnectorSpec.model_validate(m)


def policy(name: str, **body: Any) -> Any:
    return effective_rule(name, ClusterOnboardingPolicySpec.model_validate(body))


TEAM_A_BODY: dict[str, Any] = {
    "namespaces": {"names": ["a"]},
    "aws": {"accountIds": [X], "roleArns": ["arn:aws:iam::*:role/defender-*"]},
    "azure": {
        "ambientIdentity": True,
        "tenantIds": ["*"],
        "subscriptionIds": ["*"],
        "resourceGroups": ["defender-*"],
    },
}
TEAM_A = policy("team-a", **TEAM_A_BODY)


def test_own_secrets_need_no_policy_even_with_a_role_assumed_with_them() -> None:
    own = spec(aws={"secretRef": {"name": "aws"}, "roleArn": ROLE_X}, azure_secret=True)
    assert admit(own, "anywhere", {}, []).allowed_by == DEFAULT


def test_without_a_policy_the_operators_identity_is_refused_naming_the_field() -> None:
    for refused in (spec(aws={"roleArn": ROLE_X}, azure_secret=True), spec(azure_secret=True)):
        decision = admit(refused, "a", {}, [])
        assert decision.allowed_by is None and decision.refusal
        assert (
            "spec.aws.credentials" in decision.refusal
            and "no ClusterOnboardingPolicy selects namespace a" in (decision.refusal)
        )
    azure = admit(spec(aws={"secretRef": {"name": "aws"}}), "a", {}, [])
    assert azure.refusal and "spec.azure.credentialsSecretRef" in azure.refusal


def test_a_policy_grants_its_namespaces_its_accounts_and_its_roles_only() -> None:
    wanted = spec(aws={"roleArn": ROLE_X}, resourceGroup="defender-connectors")
    assert admit(wanted, "a", {}, [TEAM_A]).allowed_by == "team-a"
    assert admit(wanted, "b", {}, [TEAM_A]).refusal  # namespace B may not onboard X
    other = spec(Y, aws={"roleArn": f"arn:aws:iam::{Y}:role/defender-onboarding"}, resourceGroup="defender-x")
    refused = admit(other, "a", {}, [TEAM_A]).refusal
    assert refused and f"aws.accountIds does not include {Y}" in refused  # A may not onboard Y
    ambient = admit(spec(resourceGroup="defender-x"), "a", {}, [TEAM_A]).refusal
    assert ambient and "aws.ambientIdentity" in ambient
    wrong_rg = admit(spec(aws={"roleArn": ROLE_X}, resourceGroup="prod"), "a", {}, [TEAM_A]).refusal
    assert wrong_rg and "azure.resourceGroups does not match prod" in wrong_rg


def test_one_policy_must_allow_both_sides() -> None:
    aws_only = policy(
        "aws-only", namespaces={"names": ["a"]}, aws={"accountIds": [X], "ambientIdentity": True}
    )
    azure_only = policy(
        "azure-only",
        namespaces={"names": ["a"]},
        azure={"ambientIdentity": True, "tenantIds": ["*"], "subscriptionIds": ["*"]},
    )
    assert admit(spec(), "a", {}, [aws_only, azure_only]).refusal
    assert admit(spec(azure_secret=True), "a", {}, [aws_only, azure_only]).allowed_by == "aws-only"
    assert (
        admit(spec(aws={"secretRef": {"name": "k"}}), "a", {}, [aws_only, azure_only]).allowed_by
        == "azure-only"
    )


def test_namespaces_by_label_selector() -> None:
    by_label = policy(
        "labelled",
        namespaces={
            "selector": {
                "matchLabels": {"team": "payments"},
                "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "stage"]}],
            }
        },
        aws={"accountIds": ["*"], "ambientIdentity": True},
    )
    wanted = spec(azure_secret=True)
    assert admit(wanted, "p", {"team": "payments", "env": "prod"}, [by_label]).allowed_by == "labelled"
    assert admit(wanted, "p", {"team": "payments", "env": "dev"}, [by_label]).refusal
    assert admit(wanted, "p", {"env": "prod"}, [by_label]).refusal


def test_globs_become_anchored_regexes() -> None:
    assert glob_regex("arn:aws:iam::*:role/defender-*") == r"^arn:aws:iam::[^/]*:role/defender\-[^/]*$"
    assert glob_regex("rg.(x)") == r"^rg\.\(x\)$"


def test_managing_eks_access_entries_with_the_operators_identity_needs_its_own_grant() -> None:
    """eksAccessEntries Manage gives Defender's discovery role cluster-admin in every EKS cluster of the account:
    with the operator's identity that takes aws.eksAccessEntries; with the namespace's own keys it is its own power."""
    wanted = spec(aws={"roleArn": ROLE_X}, resourceGroup="defender-connectors")
    manage = wanted.model_copy(update={"aws": wanted.aws.model_copy(update={"eks_access_entries": "Manage"})})
    refused = admit(manage, "a", {}, [TEAM_A]).refusal
    assert refused and "aws.eksAccessEntries is not true (spec.aws.eksAccessEntries: Manage)" in refused
    granted = policy("eks", **{**TEAM_A_BODY, "aws": {**TEAM_A_BODY["aws"], "eksAccessEntries": True}})
    assert admit(manage, "a", {}, [granted]).allowed_by == "eks"
    own = spec(aws={"secretRef": {"name": "aws"}}, azure_secret=True)
    own = own.model_copy(update={"aws": own.aws.model_copy(update={"eks_access_entries": "Manage"})})
    assert admit(own, "b", {}, []).allowed_by == DEFAULT


def test_member_accounts_may_come_from_any_policy_that_allows_the_object_on_its_own() -> None:
    """Policies add up for member accounts too, but only those that allow the object by themselves: a narrower
    policy sorted first does not hide the members another allowing policy lists, and a policy that does not allow
    the object lends it none of its accounts."""
    member, other = "210987654321", "999988887777"
    narrow = policy("a-narrow", **TEAM_A_BODY)
    wide = policy("z-wide", **{**TEAM_A_BODY, "aws": {**TEAM_A_BODY["aws"], "accountIds": [X, member]}})
    elsewhere = policy("m-elsewhere", **{**TEAM_A_BODY, "namespaces": {"names": ["b"]}, "aws": {
        **TEAM_A_BODY["aws"], "accountIds": [X, other]}})  # fmt: skip
    decision = admit(spec(aws={"roleArn": ROLE_X}), "a", {}, [wide, narrow, elsewhere])
    assert decision.allowed_by == "a-narrow"
    assert decision.allows_account(member) and decision.allows_account(X)
    assert not decision.allows_account(other)


def test_a_delegated_administrator_is_an_account_the_grant_must_list_too() -> None:
    """Issue 28, build 4: with organization.delegatedAdministratorAccountId the operator's identity signs in to that
    account and runs the StackSet from it, so a grant of the management account alone does not reach it."""
    m = base_manifest(account=X)["spec"]
    m["aws"]["organization"] = {"delegatedAdministratorAccountId": Y}
    m["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{Y}:role/defender-onboarding"}
    m["azure"]["resourceGroup"] = "defender-connectors"
    delegated = AWSConnectorSpec.model_validate(m)
    body = {**TEAM_A_BODY, "aws": {**TEAM_A_BODY["aws"], "organizations": True}}
    refused = admit(delegated, "a", {}, [policy("org", **body)]).refusal
    assert refused and (
        f"aws.accountIds does not include {Y} (spec.aws.organization.delegatedAdministratorAccountId)"
        in refused
    )
    both = policy("both", **{**body, "aws": {**body["aws"], "accountIds": [X, Y]}})
    assert admit(delegated, "a", {}, [both]).allowed_by == "both"


def test_a_grant_holds_where_both_views_of_the_policies_allow_it() -> None:
    """The watch's index and a fresh list can each be the stale one (a watch gone silent keeps a deleted policy in
    the index, campaign seed 40011; a list can be older than the event that follows it): the operator's identity is
    used where both allow it, and a refusal by either refuses."""
    wide = policy("wide", **{**TEAM_A_BODY, "aws": {**TEAM_A_BODY["aws"], "accountIds": ["*"]}})
    team_a = policy("team-a", **TEAM_A_BODY)
    s = spec(aws={"roleArn": ROLE_X}, resourceGroup="defender-connectors")
    both = narrower(admit(s, "a", {}, [wide]), admit(s, "a", {}, [team_a]))
    assert both.refusal is None and both.aws_accounts == tuple(TEAM_A_BODY["aws"]["accountIds"])
    gone = admit(s, "a", {}, [])  # the list no longer has the policy the index still holds
    assert narrower(admit(s, "a", {}, [team_a]), gone) == gone
    assert narrower(gone, admit(s, "a", {}, [team_a])) == gone
    mine = admit(spec(aws={"secretRef": {"name": "keys"}}, azure_secret=True), "a", {}, [])
    assert narrower(mine, mine) == mine  # the tenant's own Secrets need no policy in either view


def test_a_grant_a_namespace_label_gives_holds_where_every_view_of_the_labels_and_policies_has_it() -> None:
    """The namespaces' watch can go silent as the policies' can (an API server's stalled watch cache): a label the
    admin took off stays in the index, and only the list shows it gone. The operator's identity is used where every
    view of the labels and of the policies allows it."""
    by_label = policy(
        "labelled",
        namespaces={"selector": {"matchLabels": {"team": "payments"}}},
        aws={"accountIds": [X], "ambientIdentity": True},
    )
    wanted = spec(azure_secret=True)
    labelled, unlabelled = {"team": "payments"}, {"team": "other"}
    assert admit_in_views(wanted, "p", [labelled], [[by_label]]).allowed_by == "labelled"
    for views in ([labelled, unlabelled], [unlabelled, labelled]):  # the list or the index is the stale one
        refused = admit_in_views(wanted, "p", views, [[by_label]])
        assert (
            refused.allowed_by is None
            and refused.refusal
            and "no ClusterOnboardingPolicy selects" in refused.refusal
        )
    assert admit_in_views(
        wanted, "p", [labelled, labelled], [[by_label], []]
    ).refusal  # a policy view refuses too
    assert admit_in_views(wanted, "p", [unlabelled], [[]], adopt=True) == admit(wanted, "p", unlabelled, [])


def test_a_gone_namespaces_cleanup_is_allowed_by_the_recorded_policy_alone_and_as_it_is_now() -> None:
    """A namespace finalized without its objects (kubernetes/kubernetes#127977) has no labels left: the policy the
    record says allowed the last write decides, without its namespace selector, and with everything else it says."""
    by_label = {**TEAM_A_BODY, "namespaces": {"selector": {"matchLabels": {"team": "a"}}}}
    team = policy("team-a", **by_label)
    other = policy("other", **{**by_label, "namespaces": {"selector": {}}})
    wanted = spec(aws={"roleArn": ROLE_X}, resourceGroup="defender-a")
    assert admit(wanted, "a", {}, [team]).refusal  # no labels: the selector selects nothing
    assert admit_left_behind(wanted, "a", [[team]], "team-a").allowed_by == "team-a"
    assert admit_left_behind(wanted, "a", [[team], [team]], "team-a").aws_accounts == (X,)
    # only the recorded policy: another that would allow it (it selects every namespace) does not count
    assert admit_left_behind(wanted, "a", [[other]], "team-a").refusal
    assert admit_left_behind(wanted, "a", [[team, other]], None).refusal
    # the recorded policy as it is now: narrowed to another account, it allows nothing here
    narrowed = policy("team-a", **{**by_label, "aws": {**by_label["aws"], "accountIds": [Y]}})
    assert admit_left_behind(wanted, "a", [[narrowed]], "team-a").refusal
    # and in every view: gone from one (deleted, its grace over), it allows nothing
    assert admit_left_behind(wanted, "a", [[team], []], "team-a").refusal
