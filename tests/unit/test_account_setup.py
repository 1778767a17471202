"""The account setup stack (deploy/aws/account-setup.json) and the operator's IAM policies: generated from one source,
valid CloudFormation, clean under parliament, and the hardened policy forbids what lets its holder grant itself more
than Defender's roles have."""

import json
from pathlib import Path
from typing import Any

import parliament

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.account_setup import (
    ASSUME_ROLES_SID,
    SetupOptions,
    account_setup_template,
    assume_roles_statement,
    delegated_admin_policy,
    hub_policy,
    hub_template,
    managed_operator_policy,
    operator_policy,
    setup_stack_set_template,
)
from defender_operator.render.catalog import MANAGED_POLICY_PATH
from defender_operator.render.cloudformation import stack_template
from defender_operator.render.placeholders import substitute
from defender_operator.sandbox.aws.authorization import decide
from tests.support.checks import cfn_lint_errors, terraform_values
from tests.support.manifests import base_manifest
from tests.support.paths import REPO

ACCOUNT = "111122223333"
CONCRETE = {"AWS::Partition": "aws", "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}


def concrete(value: Any) -> Any:
    """Resolve the template's Fn::Sub strings for one account (what CloudFormation does on deploy)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::Sub"}:
            text = value["Fn::Sub"]
            for name, resolved in CONCRETE.items():
                text = text.replace("${" + name + "}", resolved)
            return text
        return {k: concrete(v) for k, v in value.items()}
    if isinstance(value, list):
        return [concrete(v) for v in value]
    return value


def resolved(document: Any) -> Any:
    """Fill a target-neutral document's placeholders for one account."""
    values = {"partition": "aws", "account": ACCOUNT, "dnsSuffix": "amazonaws.com"}
    return substitute(document, {}, values, lambda text: text)


def test_the_checked_in_files_are_generated() -> None:
    from defender_operator.render.terraform import hub_configuration

    generated = {
        "account-setup.json": account_setup_template(),
        "account-setup-stackset.json": setup_stack_set_template(),
        "hub.json": hub_template(),
        "hub.tf.json": hub_configuration(),
    }
    for name, document in generated.items():
        assert json.loads((REPO / "deploy" / "aws" / name).read_text()) == document, (
            f"deploy/aws/{name} is stale: run ./scripts/generate"
        )
    assert json.loads((REPO / "docs" / "operator-iam-policy.json").read_text()) == operator_policy(), (
        "docs/operator-iam-policy.json is stale: run ./scripts/generate"
    )


def test_the_setup_hub_and_stack_set_templates_are_valid_cloudformation() -> None:
    assert cfn_lint_errors(account_setup_template()) == []
    assert cfn_lint_errors(hub_template()) == []
    assert cfn_lint_errors(setup_stack_set_template()) == []


def test_the_stack_set_deploys_the_setup_template_with_its_parameters() -> None:
    stack_set = setup_stack_set_template()["Resources"]["AccountSetup"]["Properties"]
    assert json.loads(stack_set["TemplateBody"]) == account_setup_template()
    assert len(stack_set["TemplateBody"]) < 51_200  # CreateStackSet's TemplateBody limit
    setup_parameters = account_setup_template()["Parameters"]
    passed = {p["ParameterKey"] for p in stack_set["Parameters"]}
    # every parameter but the roles to assume: the members' operator roles assume none
    assert passed == set(setup_parameters) - {"AssumableRoles"}
    assert (
        stack_set["PermissionModel"] == "SERVICE_MANAGED" and stack_set["AutoDeployment"]["Enabled"] is True
    )


def test_the_hub_may_only_assume_the_spoke_role() -> None:
    role = hub_template()["Resources"]["HubRole"]["Properties"]
    (statement,) = role["Policies"][0]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/${SpokeRoleName}"}
    assert (
        hub_template()["Parameters"]["SpokeRoleName"]["Default"]
        == (account_setup_template()["Parameters"]["OperatorRoleName"]["Default"])
    )


def test_every_policy_passes_parliament() -> None:
    template = account_setup_template()
    documents = {
        "operator (inline)": operator_policy(),
        "operator (delegated administrator)": delegated_admin_policy(
            SetupOptions(assume_roles=("member-role",))
        ),
        "operator (managed)": resolved(managed_operator_policy()),
        "hub": substitute(hub_policy(None), {"spokeRole": "defender-operator", "partition": "aws"}, {}, str),
    }
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            documents[logical_id] = concrete(resource["Properties"]["PolicyDocument"])
    problems = []
    for name, document in documents.items():
        for finding in parliament.analyze_policy_string(json.dumps(document)).findings:
            severity = str(parliament.config.get(finding.issue, {}).get("severity", "")).upper()
            if severity in ("MEDIUM", "HIGH", "CRITICAL") and finding.issue != "RESOURCE_MISMATCH":
                problems.append(f"{name}: {finding.issue} {finding.detail}")
    assert problems == []


def test_managed_roles_attach_exactly_the_setup_stacks_policies() -> None:
    spec = AWSConnectorSpec.model_validate(
        {
            **base_manifest()["spec"],
            "aws": {"accountId": ACCOUNT, "rolePolicies": "Managed"},
            "plans": {"cspm": {"enabled": True}},
        }
    )
    stack = stack_template(spec)
    setup = {
        f"arn:aws:iam::{ACCOUNT}:policy{MANAGED_POLICY_PATH}{r['Properties']['ManagedPolicyName']}"
        for r in account_setup_template()["Resources"].values()
        if r["Type"] == "AWS::IAM::ManagedPolicy"
    }
    attached = set()
    for resource in stack["Resources"].values():
        if resource["Type"] == "AWS::IAM::Role":
            assert "Policies" not in resource["Properties"]
            attached |= {concrete(a) for a in resource["Properties"].get("ManagedPolicyArns", [])}
    customer = {a for a in attached if ":aws:policy/" not in a}
    assert customer and customer <= setup


def allowed(action: str, resource: str, **context: str) -> bool:
    return decide([resolved(managed_operator_policy())], action, resource, context)[0]


def test_the_hardened_policy_forbids_inline_policies_and_foreign_attachments() -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/DefenderForCloud-Anything"
    setup_policy = f"arn:aws:iam::{ACCOUNT}:policy{MANAGED_POLICY_PATH}CspmMonitorAwsPolicy"
    assert allowed("iam:CreateRole", role)
    assert not allowed("iam:PutRolePolicy", role)
    assert allowed("iam:AttachRolePolicy", role, **{"iam:PolicyARN": setup_policy})
    assert allowed("iam:AttachRolePolicy", role, **{"iam:PolicyARN": "arn:aws:iam::aws:policy/SecurityAudit"})
    for foreign in ("arn:aws:iam::aws:policy/AdministratorAccess", f"arn:aws:iam::{ACCOUNT}:policy/Mine"):
        assert not allowed("iam:AttachRolePolicy", role, **{"iam:PolicyARN": foreign})
    for action in ("iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:DeletePolicy"):
        assert not allowed(action, setup_policy)
    # the explicit denies hold even beside a policy that allows everything
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    both = [resolved(managed_operator_policy()), everything]
    assert decide(both, "iam:PutRolePolicy", role, {}) == (False, True)
    assert decide(both, "iam:CreatePolicyVersion", setup_policy, {}) == (False, True)


def test_identity_providers_only_for_microsofts_issuer_and_the_ciem_tenants_the_administrator_names() -> None:
    """Issue 25: the policy allowed a provider for any Entra tenant (sts.windows.net/*), so whoever reached the
    operator could make a CIEM role trust an identity of their own tenant."""
    microsoft = f"arn:aws:iam::{ACCOUNT}:oidc-provider/sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"
    own = f"arn:aws:iam::{ACCOUNT}:oidc-provider/sts.windows.net/77777777-6666-5555-4444-333333333333/"
    assert allowed("iam:CreateOpenIDConnectProvider", microsoft)
    assert not allowed("iam:CreateOpenIDConnectProvider", own)
    granted = [
        resolved(
            managed_operator_policy(SetupOptions(ciem_tenants=("77777777-6666-5555-4444-333333333333",)))
        )
    ]
    assert decide(granted, "iam:CreateOpenIDConnectProvider", own, {})[0]
    other = own.replace("77777777", "88888888")
    assert not decide(granted, "iam:CreateOpenIDConnectProvider", other, {})[0]


def test_the_roles_named_in_policies_are_those_the_catalog_names() -> None:
    """rolePolicies Managed keeps these roles' default names (CEL and the model refuse a rename)."""
    import re

    from defender_operator.api.spec import ROLES_NAMED_IN_POLICIES
    from defender_operator.render.catalog import catalog

    named = {
        m
        for role in catalog().roles.values()
        for policy in role.policies
        for m in re.findall(r"\{role:(\w+)\}", json.dumps(policy.statements))
    }
    assert named == set(ROLES_NAMED_IN_POLICIES)


def test_managed_stacks_are_valid_cloudformation_for_every_access_and_kind() -> None:
    from defender_operator.render import render

    for access in ("Default", "LeastPrivilege"):
        for organization in (False, True):
            aws: dict[str, Any] = {"accountId": ACCOUNT, "rolePolicies": "Managed"}
            if organization:
                aws["organization"] = {}
            plans = {
                "cspm": {
                    "enabled": True,
                    "ciem": {"enabled": True, "oidcSubject": "99999999-8888-7777-6666-555555555555"},
                }
            }
            spec = AWSConnectorSpec.model_validate(
                {**base_manifest()["spec"], "aws": aws, "plans": plans, "access": access}
            )
            rendered = render(spec)
            assert cfn_lint_errors(rendered.cloudformation.content) == []
            if rendered.member_stackset is not None:
                assert cfn_lint_errors(rendered.member_stackset.content) == []


def test_the_terraform_setup_holds_the_same_policies_and_role() -> None:
    from defender_operator.render.terraform import account_setup_configuration

    configuration = account_setup_configuration()
    assert json.loads((REPO / "deploy" / "aws" / "account-setup.tf.json").read_text()) == configuration, (
        "deploy/aws/account-setup.tf.json is stale: run ./scripts/generate"
    )

    def interpolated(text: str) -> Any:
        text = text.replace("${data.aws_partition.current.partition}", "aws")
        text = text.replace("${data.aws_caller_identity.current.account_id}", ACCOUNT)
        text = text.replace("${data.aws_partition.current.dns_suffix}", "amazonaws.com")
        assert "${" not in text
        return json.loads(text)

    template = account_setup_template()["Resources"]
    cloudformation = {
        r["Properties"]["ManagedPolicyName"]: concrete(r["Properties"]["PolicyDocument"])
        for r in template.values()
        if r["Type"] == "AWS::IAM::ManagedPolicy"
    }
    terraform = {
        p["name"]: interpolated(p["policy"]) for p in configuration["resource"]["aws_iam_policy"].values()
    }
    assert terraform == cloudformation
    assert all(p["path"] == MANAGED_POLICY_PATH for p in configuration["resource"]["aws_iam_policy"].values())
    operator = interpolated(configuration["resource"]["aws_iam_role_policy"]["operator"]["policy"])
    assert operator == concrete(template["OperatorRole"]["Properties"]["Policies"][0]["PolicyDocument"])


def test_a_refused_inline_policy_points_to_managed_role_policies() -> None:
    from defender_operator.reconcile.aws_side import failure_hint

    refused = (
        "User: arn:aws:sts::1:assumed-role/defender-operator/s is not authorized to perform: iam:PutRolePolicy on "
        "resource: arn:aws:iam::1:role/CspmMonitorAws with an explicit deny in an identity-based policy"
    )
    assert failure_hint(refused, "Inline").endswith("set spec.aws.rolePolicies: Managed)")
    assert failure_hint(refused, "Managed") == refused
    assert failure_hint("Resource limit exceeded", "Inline") == "Resource limit exceeded"


def test_terraform_evaluates_the_trust_and_policies_it_is_given(tmp_path: Path) -> None:
    """The conditional documents of the Terraform files, evaluated by Terraform itself: valid JSON, the same
    documents as CloudFormation's, IRSA's condition keys named after the issuer."""
    from defender_operator.render.terraform import account_setup_configuration, hub_configuration

    setup = account_setup_configuration()
    hub = hub_configuration()
    role = "arn:aws:iam::111122223333:role/defender-operator-hub"
    cases = [
        (setup, "aws_iam_role", "operator", "assume_role_policy", {"operator_principal_arn": role}),
        (
            setup,
            "aws_iam_role",
            "operator",
            "assume_role_policy",
            {"operator_principal_arn": role, "external_id": "x"},
        ),
        (hub, "aws_iam_role", "hub", "assume_role_policy", {}),
        (
            hub,
            "aws_iam_role",
            "hub",
            "assume_role_policy",
            {"oidc_provider_arn": f"{ACCOUNT}:oidc-provider/oidc.eks.x/id/AB"},
        ),
        (hub, "aws_iam_role_policy", "hub", "policy", {}),
        (hub, "aws_iam_role_policy", "hub", "policy", {"organization_id": "o-abcdefghij"}),
    ]
    values = []
    for number, (configuration, kind, name, field, variables) in enumerate(cases):
        workdir = tmp_path / str(number)
        workdir.mkdir()
        expression = configuration["resource"][kind][name][field]
        values.append(json.loads(terraform_values(configuration, {"v": expression}, variables, workdir)["v"]))
    without, with_id, pod_identity, irsa, anywhere, in_organization = values
    assert "Condition" not in without["Statement"][0] and without["Statement"][0]["Principal"] == {
        "AWS": role
    }
    assert with_id["Statement"][0]["Condition"] == {"StringEquals": {"sts:ExternalId": "x"}}
    assert pod_identity["Statement"][0]["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert irsa["Statement"][0]["Condition"]["StringEquals"] == {
        "oidc.eks.x/id/AB:sub": "system:serviceaccount:defender-operator:defender-operator",
        "oidc.eks.x/id/AB:aud": "sts.amazonaws.com",
    }
    assert anywhere["Statement"][0]["Resource"] == "arn:aws:iam::*:role/defender-operator"
    assert "Condition" not in anywhere["Statement"][0]
    assert in_organization["Statement"][0]["Condition"] == {
        "StringEquals": {"aws:ResourceOrgID": "o-abcdefghij"}
    }
    cloudformation = concrete(
        hub_template()["Resources"]["HubRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    )
    cloudformation["Statement"][0]["Resource"] = cloudformation["Statement"][0]["Resource"].replace(
        "${SpokeRoleName}", "defender-operator"
    )
    del cloudformation["Statement"][0]["Condition"]  # the Fn::If of an empty OrganizationId
    assert anywhere == cloudformation


def test_assume_role_only_on_the_roles_the_administrator_names() -> None:
    """Issue 28: sts:AssumeRole on * reaches every role that trusts the account (OrganizationAccountAccessRole in
    every member, from a management account). By default the operator may assume no role at all (it onboards the
    account it runs in); --assume-role names the grants' roles, and '*' is the old reach, asked for by name."""
    member_admin = "arn:aws:iam::210987654321:role/OrganizationAccountAccessRole"
    onboarding = "arn:aws:iam::210987654321:role/defender-onboarding"
    for policy in (operator_policy(), resolved(managed_operator_policy())):
        assert not decide([policy], "sts:AssumeRole", member_admin, {})[0]
        assert not decide([policy], "sts:AssumeRole", onboarding, {})[0]
    anything = SetupOptions(assume_roles=("*",))
    for policy in (operator_policy(anything), resolved(managed_operator_policy(anything))):
        assert decide([policy], "sts:AssumeRole", member_admin, {})[0]
    options = SetupOptions(assume_roles=("defender-onboarding", "arn:aws:iam::111122223333:role/hub-*"))
    for policy in (operator_policy(options), resolved(managed_operator_policy(options))):
        assert decide([policy], "sts:AssumeRole", onboarding, {})[0]
        assert decide([policy], "sts:AssumeRole", "arn:aws:iam::111122223333:role/hub-eu", {})[0]
        assert not decide([policy], "sts:AssumeRole", member_admin, {})[0]
        assert not decide([policy], "sts:AssumeRole", "arn:aws:iam::444455556666:role/hub-eu", {})[0]
    from defender_operator.render.terraform import account_setup_configuration

    assert account_setup_configuration(options)["variable"]["assumable_roles"]["default"] == [
        "arn:aws:iam::*:role/defender-onboarding",
        "arn:aws:iam::111122223333:role/hub-*",
    ]


def test_a_role_name_with_a_comma_stays_whole_in_the_terraform_default() -> None:
    """IAM role names may hold commas ([\\w+=,.@-]+, API_CreateRole.html): Terraform's list keeps such a role whole,
    where splitting a joined string made two roles of it."""
    from defender_operator.render.terraform import account_setup_configuration

    options = SetupOptions(assume_roles=("arn:aws:iam::111122223333:role/team,a-onboarding",))
    assert account_setup_configuration(options)["variable"]["assumable_roles"]["default"] == [
        "arn:aws:iam::111122223333:role/team,a-onboarding"
    ]
    assert account_setup_configuration(SetupOptions(assume_roles=("*",)))["variable"]["assumable_roles"][
        "default"
    ] == ["*"]


def test_the_setup_templates_take_the_roles_to_assume_as_a_parameter(tmp_path: Path) -> None:
    """Issue 28: the checked-in setup serves a management account without regenerating it. The roles to assume are
    a parameter (CloudFormation ``AssumableRoles``, Terraform ``assumable_roles``; ``--assume-role`` gives its
    default) held in a policy of its own, created only when the parameter names a role; the role's main policy
    names none. Deployed and authorized by the emulator in test_least_privilege.py."""
    from defender_operator.render.terraform import account_setup_configuration

    template = account_setup_template()
    assert template["Parameters"]["AssumableRoles"]["Default"] == ""
    policy = template["Resources"]["AssumableRolesPolicy"]
    assert policy["Condition"] == "MayAssumeRoles"
    assert template["Conditions"]["MayAssumeRoles"] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "AssumableRoles"}]}, ""]}]
    }
    assert policy["Properties"]["Roles"] == [{"Ref": "OperatorRole"}]
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        assume_roles_statement({"Ref": "AssumableRoles"})
    ]
    named = SetupOptions(assume_roles=("defender-onboarding",))
    for options in (SetupOptions(), named):
        main = account_setup_template(options)["Resources"]["OperatorRole"]["Properties"]["Policies"]
        assert all(s["Sid"] != ASSUME_ROLES_SID for s in main[0]["PolicyDocument"]["Statement"])
    defaults = {
        options: account_setup_template(options)["Parameters"]["AssumableRoles"]["Default"]
        for options in (named, SetupOptions(assume_roles=("*", "defender-onboarding")))
    }
    assert list(defaults.values()) == ["arn:aws:iam::*:role/defender-onboarding", "*"]
    assert cfn_lint_errors(account_setup_template(named)) == []
    # the StackSet rolls the setup out to members, which assume nothing, whatever --assume-role said
    members = setup_stack_set_template(named)["Resources"]["AccountSetup"]["Properties"]
    assert json.loads(members["TemplateBody"])["Parameters"]["AssumableRoles"]["Default"] == ""
    assert "AssumableRoles" not in {p["ParameterKey"] for p in members["Parameters"]}

    configuration = account_setup_configuration()
    assert configuration["variable"]["assumable_roles"]["default"] == []
    assert account_setup_configuration(named)["variable"]["assumable_roles"]["default"] == [
        "arn:aws:iam::*:role/defender-onboarding"
    ]
    resource = configuration["resource"]["aws_iam_role_policy"]["assume_roles"]
    expressions = {"count": resource["count"], "policy": resource["policy"]}
    (tmp_path / "none").mkdir()
    (tmp_path / "two").mkdir()
    principal = {"operator_principal_arn": "arn:aws:iam::111122223333:role/defender-operator-hub"}
    none = terraform_values(configuration, {"count": resource["count"]}, principal, tmp_path / "none")
    assert none == {"count": 0}
    roles = ["arn:aws:iam::*:role/defender-onboarding", "arn:aws:iam::111122223333:role/hub-*"]
    two = terraform_values(
        configuration, expressions, {**principal, "assumable_roles": json.dumps(roles)}, tmp_path / "two"
    )
    assert two["count"] == 1
    assert json.loads(two["policy"])["Statement"] == [assume_roles_statement(roles)]


def test_a_delegated_administrators_policy_reaches_only_defenders_stacksets_and_the_organizations_structure() -> (
    None
):
    """Issue 28, build 4: in a delegated administrator account the identity needs no IAM, stack or EKS right; its
    StackSet rights are Defender's StackSets by name, and it may assume only the roles ``--assume-role`` names."""
    documents = [
        delegated_admin_policy()["Statement"],
        delegated_admin_policy(SetupOptions(assume_roles=("m",)))["Statement"],
    ]
    plain, with_member = ([decide([{"Statement": s}], *case, {})[0] for case in CASES] for s in documents)
    assert plain == [False, True, True, False, False, False, False]
    assert with_member == [False, True, True, False, False, False, True]
    actions = {a for s in documents[1] for a in s["Action"]}
    assert not any(a.startswith(("iam:", "eks:", "ssm:")) for a in actions)
    assert "organizations:ListDelegatedAdministrators" in actions


CASES = (
    (
        "cloudformation:CreateStack",
        "arn:aws:cloudformation:us-east-1:210987654321:stack/DefenderForCloud-1/x",
    ),
    (
        "cloudformation:CreateStackSet",
        "arn:aws:cloudformation:us-east-1:210987654321:stackset/DefenderForCloud-Members:*",
    ),
    ("organizations:ListDelegatedAdministrators", "*"),
    ("cloudformation:UpdateStackSet", "arn:aws:cloudformation:us-east-1:210987654321:stackset/other:*"),
    ("iam:CreateRole", "arn:aws:iam::210987654321:role/DefenderForCloud-CspmMonitor"),
    ("sts:AssumeRole", "arn:aws:iam::111122223333:role/OrganizationAccountAccessRole"),
    ("sts:AssumeRole", "arn:aws:iam::111122223333:role/m"),
)
