"""Resolve the catalog's placeholders for one spec and one target language.

The catalog writes ``{account}``, ``{role:cspmMonitor}`` and so on. Values known from the spec (tenant, role names,
external id) are filled in as literals. Values only the deploying account knows (partition, account id, URL suffix,
the identity provider's ARN) become the target's own syntax: ``${AWS::Partition}`` inside ``Fn::Sub`` for
CloudFormation, ``${data.aws_partition.current.partition}`` for Terraform.
"""

import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from ..api.spec import AWSConnectorSpec
from .catalog import ROLE_KEYS, catalog, role_name

_PLACEHOLDER = re.compile(r"\{([A-Za-z]+(?::[A-Za-z0-9]+)?)\}")
# Namespace of the default data-collection external id: uuid5(namespace, "<tenant>/<account>") is stable for one
# onboarding and different for every other, which is what sts:ExternalId needs to stop a confused deputy.
_EXTERNAL_ID_NAMESPACE = uuid.UUID("6c3f4f1e-4a44-5b37-9d8e-2f0d5c1e7a10")


def data_collection_external_id(spec: AWSConnectorSpec) -> str:
    explicit = spec.plans.containers.data_collection_external_id
    return explicit or str(
        uuid.uuid5(_EXTERNAL_ID_NAMESPACE, f"{spec.azure.tenant_id}/{spec.aws.account_id}")
    )


def ciem_oidc_host(spec: AWSConnectorSpec) -> str:
    return tenant_oidc_host(spec.azure.tenant_id)


def tenant_oidc_host(tenant_id: str) -> str:
    """The issuer host of an Entra tenant's tokens, which CIEM's identity provider trusts."""
    return f"sts.windows.net/{tenant_id}/"


def literals(spec: AWSConnectorSpec) -> dict[str, str]:
    """Placeholders whose value the spec fixes."""
    values = {
        "tenant": spec.azure.tenant_id,
        "oidcHost": catalog().microsoft_oidc.host,
        "ciemOidcHost": ciem_oidc_host(spec),
        "oidcSubject": spec.plans.cspm.ciem.oidc_subject or "",
        "externalId": data_collection_external_id(spec),
    }
    values.update({f"role:{key}": role_name(spec, key) for key in ROLE_KEYS})
    return values


def substitute(
    value: Any,
    known: Mapping[str, str],
    deferred: Mapping[str, str],
    wrap: Callable[[str], Any],
    whole: Mapping[str, Any] | None = None,
) -> Any:
    """Fill placeholders in a JSON-like value.

    ``known`` placeholders become their literal value; ``deferred`` ones become the target's expression syntax, and
    a string that holds any of them is passed to ``wrap`` (CloudFormation wraps it in ``Fn::Sub``). A string that is
    exactly one placeholder named in ``whole`` is replaced by that (non-string) expression.
    """
    if isinstance(value, dict):
        return {
            substitute(k, known, {}, str): substitute(v, known, deferred, wrap, whole)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [substitute(v, known, deferred, wrap, whole) for v in value]
    if not isinstance(value, str) or "{" not in value:  # most strings of a policy hold no placeholder
        return value
    match = _PLACEHOLDER.fullmatch(value)
    if whole and match and match.group(1) in whole:
        return whole[match.group(1)]
    is_deferred = False

    def replace(m: re.Match[str]) -> str:
        nonlocal is_deferred
        name = m.group(1)
        if name in known:
            return known[name]
        if name in deferred:
            is_deferred = True
            return deferred[name]
        raise KeyError(f"unresolved placeholder {{{name}}} in {value!r}")

    result = _PLACEHOLDER.sub(replace, value)
    return wrap(result) if is_deferred else result
