"""Which IAM role names one object uses: what its spec sets, else what its roles are already called, else today's
defaults.

Microsoft renames its default roles now and then (the containers roles became ``MDCContainersK8s*``); an object
onboarded under older defaults must not have its live roles renamed by an upgrade (CloudFormation would replace
them, breaking Defender's trust until the connector is rewritten). So names are recorded on ``status.aws.roleNames``
and, for objects onboarded before that record existed, read from the role ARNs on ``status.aws.roles``.
"""

from ..api.spec import AWSConnectorSpec, RoleNames
from ..api.status import AWSConnectorStatus


def resolve(spec: AWSConnectorSpec, status: AWSConnectorStatus) -> dict[str, str]:
    """Every role key's name: set in the spec > recorded > the name of the live role > default."""
    aws = status.aws
    recorded = dict(aws.role_names) if aws else {}
    live = {key: arn.rsplit("/", 1)[-1] for key, arn in (aws.roles if aws else {}).items()}
    explicit = spec.aws.role_names.explicit()
    names = RoleNames().model_dump(by_alias=True)
    return {
        key: explicit.get(key) or recorded.get(key) or live.get(key) or default
        for key, default in names.items()
    }


def with_names(spec: AWSConnectorSpec, names: dict[str, str]) -> AWSConnectorSpec:
    """The spec the renderers see: every role name filled in."""
    role_names = RoleNames.model_validate(names)
    return spec.model_copy(update={"aws": spec.aws.model_copy(update={"role_names": role_names})})
