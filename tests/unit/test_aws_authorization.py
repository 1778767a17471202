"""The AWS emulator's policy evaluation (sandbox/aws/authorization.py) follows AWS's logic where moto's does not:
an Allow whose condition fails is no deny, an explicit Deny wins, a missing condition key fails a condition unless the
operator is negated or ...IfExists, and resources are matched (moto checks every IAM request against ``*``)."""

from defender_operator.sandbox.aws.authorization import decide, request_facts

ROLE = "arn:aws:iam::400011112222:role/DefenderForCloud-CspmMonitor"
READ_ONLY = "arn:aws:iam::aws:policy/ReadOnlyAccess"
ATTACH = {
    "Effect": "Allow",
    "Action": "iam:AttachRolePolicy",
    "Resource": "arn:aws:iam::*:role/DefenderForCloud-*",
    "Condition": {"ArnEquals": {"iam:PolicyARN": [READ_ONLY]}},
}


def policy(*statements: dict[str, object]) -> list[dict[str, object]]:
    return [{"Version": "2012-10-17", "Statement": list(statements)}]


def test_an_allow_holds_only_for_its_resources_and_conditions() -> None:
    docs = policy(ATTACH)
    assert decide(docs, "iam:AttachRolePolicy", ROLE, {"iam:PolicyARN": READ_ONLY}) == (True, False)
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert decide(docs, "iam:AttachRolePolicy", ROLE, {"iam:PolicyARN": admin}) == (False, False)
    assert decide(docs, "iam:AttachRolePolicy", ROLE, {}) == (False, False)  # key missing: condition false
    other = "arn:aws:iam::400011112222:role/Admin"
    assert decide(docs, "iam:AttachRolePolicy", other, {"iam:PolicyARN": READ_ONLY}) == (False, False)
    assert decide(docs, "IAM:attachrolepolicy", ROLE, {"IAM:PolicyArn": READ_ONLY}) == (True, False)


def test_a_failed_condition_on_an_allow_does_not_deny_what_another_statement_allows() -> None:
    broad = {"Effect": "Allow", "Action": "iam:*", "Resource": "*"}
    assert decide(policy(ATTACH, broad), "iam:AttachRolePolicy", ROLE, {}) == (True, False)


def test_an_explicit_deny_wins() -> None:
    deny = {"Effect": "Deny", "Action": "iam:*", "NotResource": "arn:aws:iam::*:role/DefenderForCloud-*"}
    broad = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    assert decide(policy(broad, deny), "iam:CreateRole", "arn:aws:iam::1:role/Admin", {}) == (False, True)
    assert decide(policy(broad, deny), "iam:CreateRole", ROLE, {}) == (True, False)


def test_negated_and_if_exists_operators_hold_when_the_key_is_missing() -> None:
    deny = {
        "Effect": "Deny",
        "Action": "iam:CreateRole",
        "Resource": "*",
        "Condition": {"StringNotEquals": {"iam:PermissionsBoundary": "arn:aws:iam::1:policy/Boundary"}},
    }
    allow = {"Effect": "Allow", "Action": "iam:CreateRole", "Resource": "*"}
    assert decide(policy(allow, deny), "iam:CreateRole", ROLE, {}) == (False, True)
    bounded = {"iam:PermissionsBoundary": "arn:aws:iam::1:policy/Boundary"}
    assert decide(policy(allow, deny), "iam:CreateRole", ROLE, bounded) == (True, False)
    if_exists = {**allow, "Condition": {"StringEqualsIfExists": {"aws:RequestTag/team": "a"}}}
    assert decide(policy(if_exists), "iam:CreateRole", ROLE, {}) == (True, False)


def test_requests_name_the_resources_iam_and_cloudformation_authorize() -> None:
    params = {"RoleName": "DefenderForCloud-CspmMonitor", "PolicyArn": READ_ONLY}
    arn, context = request_facts("iam", "AttachRolePolicy", params.get, "400011112222", "us-east-1")
    assert (arn, context) == (ROLE, {"iam:PolicyARN": READ_ONLY})
    url = {"Url": "https://sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"}
    arn, _ = request_facts("iam", "CreateOpenIDConnectProvider", url.get, "400011112222", "us-east-1")
    assert (
        arn == "arn:aws:iam::400011112222:oidc-provider/sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"
    )
    stack = {"StackName": "DefenderForCloud-400011112222"}
    arn, _ = request_facts("cloudformation", "CreateStack", stack.get, "400011112222", "eu-west-1")
    assert arn == "arn:aws:cloudformation:eu-west-1:400011112222:stack/DefenderForCloud-400011112222/*"
