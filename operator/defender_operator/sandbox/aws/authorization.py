"""IAM authorization of requests made by IAM principals of chosen accounts, and of what CloudFormation does for them.

moto can check requests against IAM policies (``INITIAL_NO_AUTH_ACTION_COUNT``), but not as AWS does: it matches no
resource for IAM, CloudFormation or STS requests (every request is checked against ``*``, so a policy scoped to
``role/DefenderForCloud-*`` allows nothing), it treats an ``Allow`` whose condition does not hold as an explicit
deny, it never fills a condition key, and it checks every request, so the sandbox's own credentials would need
policies too. This module decides instead, for the accounts a test names (``POST /_sandbox/config
{"enforceIamAccounts": [...]}``), following the policy evaluation logic of AWS
(docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html): an explicit deny wins, then an
allow, else the request is denied; a condition key absent from the request makes a condition false, except for the
negated operators. Credentials that belong to no IAM user or role (the sandbox's own) act as the account's root
user and are not checked, as in AWS.

Resources and condition keys are filled for the actions the operator and its stack use (Service Authorization
Reference, "Actions, resources, and condition keys for AWS Identity and Access Management" and "... for AWS
CloudFormation"): IAM roles, policies and OpenID Connect providers, CloudFormation stacks and StackSets, STS roles;
``iam:PolicyARN``, ``iam:PermissionsBoundary``. Any other request is checked against resource ``*``.

CloudFormation creates, updates and deletes a stack's IAM roles with the permissions of whoever called it (forward
access sessions, when no service role is given: .../AWSCloudFormation/latest/UserGuide/using-iam-servicerole.html),
so those calls are checked against the caller's policies too (:func:`forwarded`); a refusal fails the resource as
it does in AWS. Other resource types in a stack are not checked.
"""

import contextlib
import functools
import json
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar


class Settings:
    accounts: ClassVar[frozenset[str]] = frozenset()


@dataclass(frozen=True)
class Principal:
    account: str
    arn: str  # the ARN AWS names in AccessDenied messages
    kind: str  # "role" or "user"
    name: str


class Denied(Exception):
    """AccessDenied, worded as IAM words it (the resource is named; the reason is "no identity-based policy")."""

    code = "AccessDenied"

    def __init__(self, principal: Principal, action: str, resource: str, explicit: bool) -> None:
        why = (
            "with an explicit deny in an identity-based policy"
            if explicit
            else (f"because no identity-based policy allows the {action} action")
        )
        self.message = (
            f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} {why}"
        )
        super().__init__(self.message)


# --- who is asking ---------------------------------------------------------------------------------------------------

_ACCESS_KEY = re.compile(r"Credential=([^/,\s]+)/")


def principal_of(account: str, authorization: str) -> Principal | None:
    """The IAM role (assumed) or user behind a request's access key, if its account is checked."""
    if account not in Settings.accounts:
        return None
    match = _ACCESS_KEY.search(authorization or "")
    if not match:
        return None
    from moto.iam.models import iam_backends

    backend = iam_backends[account]["aws"]
    key = backend.access_keys.get(match.group(1))
    role_arn: str | None = getattr(key, "role_arn", None)
    if role_arn:
        role_name = role_arn.rsplit("/", 1)[-1]
        from moto.sts.models import sts_backends

        assumed = sts_backends[account]["aws"].get_assumed_role_from_access_key(match.group(1))
        session = assumed.session_name if assumed else "session"
        return Principal(
            account, f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}", "role", role_name
        )
    for user in backend.users.values():
        if any(k.access_key_id == match.group(1) for k in user.access_keys):
            return Principal(account, user.arn, "user", user.name)
    return None  # the sandbox's own credentials: the account's root user


def _documents(principal: Principal) -> list[dict[str, Any]]:
    from moto.iam.models import iam_backends

    backend = iam_backends[principal.account]["aws"]
    owners: list[Any]
    if principal.kind == "role":
        owners = [r for r in backend.roles.values() if r.name == principal.name]
    else:
        user = backend.users.get(principal.name)
        owners = [user, *backend.get_groups_for_user(principal.name)] if user else []
    documents: list[Any] = []
    for owner in owners:  # a role that no longer exists grants nothing
        documents += list(owner.policies.values())
        for policy in owner.managed_policies.values():
            documents += [v.document for v in policy.versions if v.version_id == policy.default_version_id]
    return [json.loads(d) if isinstance(d, str) else d for d in documents]


# --- the decision ----------------------------------------------------------------------------------------------------


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@functools.cache
def _wildcard(pattern: str) -> re.Pattern[str]:
    """IAM's wildcards: ``*`` any run of characters, ``?`` one character; nothing else is special."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def like(pattern: str, value: str) -> bool:
    return _wildcard(pattern).fullmatch(value) is not None


def _matches(pattern: str, value: str, *, case: bool) -> bool:
    return like(pattern, value) if case else like(pattern.lower(), value.lower())


def _element(statement: Mapping[str, Any], name: str, value: str, *, case: bool) -> bool:
    """Action/NotAction, Resource/NotResource (absent Resource: a trust policy; not used here)."""
    if name in statement:
        return any(_matches(p, value, case=case) for p in _listed(statement[name]))
    if "Not" + name in statement:
        return not any(_matches(p, value, case=case) for p in _listed(statement["Not" + name]))
    return name == "Resource"


_OPERATORS: dict[str, Any] = {
    "StringEquals": lambda want, got: got == want,
    "StringNotEquals": lambda want, got: got != want,
    "StringEqualsIgnoreCase": lambda want, got: got.lower() == want.lower(),
    "StringLike": lambda want, got: like(want, got),
    "StringNotLike": lambda want, got: not like(want, got),
    "ArnEquals": lambda want, got: got == want,
    "ArnLike": lambda want, got: like(want, got),
    "ArnNotEquals": lambda want, got: got != want,
    "ArnNotLike": lambda want, got: not like(want, got),
    "Bool": lambda want, got: got.lower() == str(want).lower(),
}


def _condition_holds(conditions: Mapping[str, Any], context: Mapping[str, str]) -> bool:
    for operator, tests in conditions.items():
        if_exists = operator.endswith("IfExists")
        name = operator.removesuffix("IfExists")
        if name not in _OPERATORS:
            raise ValueError(f"the sandbox does not evaluate condition operator {operator}")
        negated = "Not" in name
        for key, wanted in tests.items():
            got = context.get(key.lower())
            if got is None:
                if not (if_exists or negated):
                    return False
                continue
            compare = _OPERATORS[name]
            results = [compare(str(w), got) for w in _listed(wanted)]
            if not (all(results) if negated else any(results)):
                return False
    return True


def decide(
    documents: list[dict[str, Any]], action: str, resource: str, context: Mapping[str, str]
) -> tuple[bool, bool]:
    """(allowed, explicitly denied) under identity-based policies."""
    lowered = {k.lower(): v for k, v in context.items()}
    allowed = False
    for document in documents:
        for statement in _listed(document.get("Statement", [])):
            if not _element(statement, "Action", action, case=False):
                continue
            if not _element(statement, "Resource", resource, case=True):
                continue
            if not _condition_holds(statement.get("Condition", {}), lowered):
                continue
            if statement.get("Effect") == "Deny":
                return False, True
            allowed = True
    return allowed, False


def allows(principal: Principal, action: str, resource: str) -> bool:
    """Whether the principal's policies allow ``action`` (for a service that checks a permission of its caller's
    on its own, as CloudFormation checks a delegated administrator's)."""
    return decide(_documents(principal), action, resource, {})[0]


def check(principal: Principal, action: str, resource: str, context: Mapping[str, str] | None = None) -> None:
    allowed, explicit = decide(_documents(principal), action, resource, context or {})
    if not allowed:
        raise Denied(principal, action, resource, explicit)


# --- what a request is about -----------------------------------------------------------------------------------------


def request_facts(
    service: str, action: str, param: Any, account: str, region: str
) -> tuple[str, dict[str, str]]:
    """(resource ARN, condition keys) of one request; ``param(name)`` reads a request parameter."""
    context: dict[str, str] = {}
    if service == "iam":
        if param("PolicyArn") and action in ("AttachRolePolicy", "DetachRolePolicy"):
            context["iam:PolicyARN"] = param("PolicyArn")
        if param("PermissionsBoundary"):
            context["iam:PermissionsBoundary"] = param("PermissionsBoundary")
        if param("RoleName"):
            return f"arn:aws:iam::{account}:role{param('Path') or '/'}{param('RoleName')}", context
        if param("OpenIDConnectProviderArn"):
            return str(param("OpenIDConnectProviderArn")), context
        if action == "CreateOpenIDConnectProvider":
            host = str(param("Url")).removeprefix("https://")
            return f"arn:aws:iam::{account}:oidc-provider/{host}", context
        if param("PolicyArn"):
            return str(param("PolicyArn")), context
        if action == "CreatePolicy":
            return f"arn:aws:iam::{account}:policy{param('Path') or '/'}{param('PolicyName')}", context
        if param("UserName"):
            return f"arn:aws:iam::{account}:user/{param('UserName')}", context
    if service == "sts" and param("RoleArn"):
        return str(param("RoleArn")), context
    if service == "cloudformation":
        if param("StackSetName"):
            return f"arn:aws:cloudformation:{region}:{account}:stackset/{param('StackSetName')}:*", context
        name = param("StackName")
        if name:
            if str(name).startswith("arn:"):
                return str(name), context
            return f"arn:aws:cloudformation:{region}:{account}:stack/{name}/*", context
    return "*", context


# Requests every principal may make: AWS does not authorize GetCallerIdentity
# (docs.aws.amazon.com/STS/latest/APIReference/API_GetCallerIdentity.html, "No permissions are required").
UNCHECKED = frozenset({"sts:GetCallerIdentity"})


# --- CloudFormation acting for its caller ----------------------------------------------------------------------------

_acting = threading.local()


def remember(principal: Principal | None) -> None:
    """The principal of the request being served (CloudFormation will act for it)."""
    _acting.principal = principal


def current() -> Principal | None:
    principal: Principal | None = getattr(_acting, "principal", None)
    return principal


@contextlib.contextmanager
def acting_for(principal: Principal | None) -> Iterator[None]:
    previous = current()
    _acting.principal = principal
    try:
        yield
    finally:
        _acting.principal = previous


def forwarded(account: str, action: str, resource: str, context: Mapping[str, str] | None = None) -> None:
    """Check a call CloudFormation makes for the principal whose request started the stack operation."""
    principal = current()
    if principal is not None and principal.account == account and account in Settings.accounts:
        check(principal, action, resource, context)


# --- the hook into moto ----------------------------------------------------------------------------------------------

_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


def _authorize(response: Any, resource: str = "*") -> None:
    """Replaces moto's check (see the module docstring); every request passes here before its action runs."""
    account = response.current_account
    principal = principal_of(account, response.headers.get("Authorization", ""))
    remember(principal)
    if principal is None:
        return
    service_match = _SERVICE.search(response.headers.get("Authorization", ""))
    service = service_match.group(1) if service_match else ""
    action = response._get_action()
    if f"{service}:{action}" in UNCHECKED:
        return
    arn, context = request_facts(service, action, response._get_param, account, response.region)
    try:
        check(principal, f"{service}:{action}", arn, context)
    except Denied as denied:
        from moto.core.exceptions import AccessDeniedError

        error = AccessDeniedError(principal.arn, f"{service}:{action}")
        super(AccessDeniedError, error).__init__("AccessDenied", denied.message)  # IAM's full wording
        raise error from None


def install() -> None:
    from moto.core.authorization import ActionAuthenticatorMixin

    ActionAuthenticatorMixin._authenticate_and_authorize_normal_action = _authorize  # type: ignore[method-assign,assignment]
