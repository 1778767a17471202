"""Pure functions from an AWSConnector spec to what AWS and Azure need: no I/O, same input, same bytes."""

from dataclasses import dataclass

from ..api.spec import AWSConnectorSpec
from .cloudformation import member_template, stack_template
from .connector import connector_body
from .document import Rendered
from .terraform import terraform_configuration


@dataclass(frozen=True)
class RenderedConnector:
    """Everything one AWSConnector renders to."""

    cloudformation: Rendered
    member_stackset: Rendered | None
    terraform: Rendered
    connector: Rendered


def render(spec: AWSConnectorSpec, role_arns: dict[str, str] | None = None) -> RenderedConnector:
    return RenderedConnector(
        cloudformation=Rendered(stack_template(spec)),
        member_stackset=Rendered(member_template(spec)) if spec.aws.organization is not None else None,
        terraform=Rendered(terraform_configuration(spec)),
        connector=Rendered(connector_body(spec, role_arns)),
    )


__all__ = ["Rendered", "RenderedConnector", "render"]
