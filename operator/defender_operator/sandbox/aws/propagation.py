"""IAM's eventual consistency where the operator meets it: a role is assumable only a while after it was made.

IAM replicates its changes to servers around the world, so a role just created (or a policy just attached) is not
at once in effect everywhere: AWS' IAM User Guide, "Troubleshoot IAM", section "Changes that I make are not always
immediately visible", advises not to depend on such changes in critical paths at once. The operator's common case is
infrastructure as code making the onboarding role and the AWSConnector together: its first AssumeRole is refused.

With ``Settings.seconds`` above 0 (``/_sandbox/config`` ``iamPropagationSeconds``), STS refuses AssumeRole of a role
younger than that with the AccessDenied STS answers for a role it cannot assume. 0 (the default) keeps moto's
behaviour, a role assumable at once; roles moto does not know are left as moto leaves them (assumable: moto does not
require the role to exist), and changes of a trust policy are in effect at once.
"""

from typing import Any


class Settings:
    seconds = 0.0


def apply() -> None:
    from moto.core.exceptions import AccessDeniedError
    from moto.core.utils import utcnow
    from moto.iam.models import iam_backends
    from moto.sts.models import STSBackend

    from . import authorization

    original = STSBackend.assume_role

    def assume_role(self: STSBackend, *args: Any, **kwargs: Any) -> Any:
        role_arn = str(kwargs.get("role_arn", ""))
        parts = role_arn.split(":")
        if Settings.seconds > 0 and len(parts) == 6:
            partition, account = parts[1], parts[4]
            roles = iam_backends[account][partition].get_roles()
            made = next((role.create_date for role in roles if role.arn == role_arn), None)
            if made is not None and (utcnow() - made).total_seconds() < Settings.seconds:
                caller = authorization.current()
                raise AccessDeniedError(
                    caller.arn if caller is not None else f"arn:{partition}:iam::{account}:root",
                    f"sts:AssumeRole on resource: {role_arn}",
                )
        return original(self, *args, **kwargs)

    STSBackend.assume_role = assume_role  # type: ignore[method-assign]


def reset() -> None:
    Settings.seconds = 0.0
