"""The IAM OIDC identity providers the Defender roles trust, managed beside the stack and shared with others.

An account holds one provider per issuer URL, and Microsoft Sentinel uses the same Microsoft issuer; two of the
operator's own objects may rely on one provider too (two clusters, or two subscriptions onboarding one account). So
the provider carries its sharing in its own tags, read live before every change:

- ``defender-operator-created``: the object that created it (only on providers the operator created);
- ``defender-operator-audiences``: short codes of the audiences the operator added (all of them on a provider it
  created; only the missing ones on a foreign provider such as Sentinel's);
- ``defender-operator-user.<code>``: one tag per AWSConnector that relies on it.

A user's tag is written before any audience is added, so a crash in between leaves a record, never an unrecorded
change. On release an object removes its own user tag; the last user removes the audiences the operator added, and
deletes the provider only when the operator created it and nothing foreign remains. These tags are what the operator
wrote, but anyone who may tag can write them too, so a release believes them only as far as the operator's own record
agrees (``reconcile/proofs.py``): the provider was created after the object first wrote to AWS, and the audiences
removed are Defender's own and were added by this object
(docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html; Defender's guidance for
Sentinel-connected accounts: learn.microsoft.com/azure/defender-for-cloud/sentinel-connected-aws).
"""

import hashlib
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..errors import RetryableError
from ..ownership import MANAGED_BY, MANAGED_BY_TAG, Owner
from ..writes import Writing, unrecorded, write
from .api import AwsClientError, call

CREATED_TAG = "defender-operator-created"
AUDIENCES_TAG = "defender-operator-audiences"
USER_TAG_PREFIX = "defender-operator-user."


def audience_code(audience: str) -> str:
    """8 hex characters naming an audience: six codes fit a 256-character tag value, six audiences do not."""
    return hashlib.sha256(audience.encode()).hexdigest()[:8]


def user_tag(owner: Owner) -> str:
    return USER_TAG_PREFIX + hashlib.sha256(owner.ref.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ObservedProvider:
    arn: str
    audiences: list[str]
    tags: dict[str, str]
    created: Any = None  # CreateDate: the second proof of ownership (reconcile/proofs.py)

    @property
    def created_by_operator(self) -> bool:
        return CREATED_TAG in self.tags

    @property
    def added_codes(self) -> set[str]:
        return set(self.tags.get(AUDIENCES_TAG, "").split())

    @property
    def added_audiences(self) -> list[str]:
        """Audiences on the provider that the operator added (live, so only those still there)."""
        codes = self.added_codes
        return sorted(a for a in self.audiences if audience_code(a) in codes)

    def users(self) -> dict[str, str]:
        """Tag key -> owner ref of every AWSConnector that relies on this provider."""
        return {k: v for k, v in self.tags.items() if k.startswith(USER_TAG_PREFIX)}

    def created_by(self, owner: Owner) -> bool:
        return self.tags.get(CREATED_TAG) == owner.ref


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider must look like: issuer host (no scheme), audiences, thumbprints."""

    host: str
    audiences: list[str]
    thumbprints: list[str]

    def arn(self, partition: str, account: str) -> str:
        return f"arn:{partition}:iam::{account}:oidc-provider/{self.host}"


class OidcProviders:
    def __init__(
        self,
        iam: Any,
        partition: str,
        account: str,
        planned: list[str] | None = None,
        writing: Writing = unrecorded,
    ) -> None:
        """With ``planned``, writes are not made but described there (``defender-operator plan``)."""
        self.iam, self.partition, self.account, self.planned = iam, partition, account, planned
        self.writing = writing

    def _write(self, description: str) -> AbstractContextManager[bool]:
        return write(self.planned, self.writing, description)

    def observe_arn(self, arn: str) -> ObservedProvider | None:
        try:
            found = call(self.iam, "get_open_id_connect_provider", OpenIDConnectProviderArn=arn)
        except AwsClientError as exc:
            if exc.code == "NoSuchEntity":
                return None
            raise
        tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
        return ObservedProvider(
            arn=arn, audiences=list(found.get("ClientIDList", [])), tags=tags, created=found.get("CreateDate")
        )

    def observe(self, spec: ProviderSpec) -> ObservedProvider | None:
        return self.observe_arn(spec.arn(self.partition, self.account))

    def list_used_by(self, owner: Owner) -> list[ObservedProvider]:
        """Every provider in the account that carries this object's user tag (cleanup, whatever status says)."""
        found = []
        for entry in call(self.iam, "list_open_id_connect_providers")["OpenIDConnectProviderList"]:
            provider = self.observe_arn(str(entry["Arn"]))
            if provider is not None and user_tag(owner) in provider.tags:
                found.append(provider)
        return found

    def ensure(
        self,
        spec: ProviderSpec,
        owner: Owner,
        first: bool = False,
        before_adding: Callable[[str, list[str]], None] | None = None,
    ) -> tuple[ObservedProvider, list[str], bool]:
        """Make the provider trust ``spec``'s audiences and record this object as a user.

        Returns the provider, the audiences added now and whether it was created now. In steady state: one read.
        ``first`` (this object has never seen the provider): try the create before any read; IAM refuses a second
        provider of the same URL (EntityAlreadyExists, nothing changed), and only then is the existing one read
        (Microsoft Sentinel's, say) and shared as usual. ``before_adding(arn, audiences)`` is called before audiences
        are added to an existing provider (the operator records them, so only those are ever removed again).
        """
        arn = spec.arn(self.partition, self.account)
        tags = {
            CREATED_TAG: owner.ref,
            AUDIENCES_TAG: " ".join(sorted(audience_code(a) for a in spec.audiences)),
            user_tag(owner): owner.ref,
            MANAGED_BY_TAG: MANAGED_BY,
        }
        created: tuple[ObservedProvider, list[str], bool] = (
            ObservedProvider(arn=arn, audiences=list(spec.audiences), tags=tags),
            [],
            True,
        )
        if first and self.planned is None and self._create(spec, tags):
            return created
        observed = self.observe(spec)
        if observed is None:
            if not self._create(spec, tags):
                raise RetryableError("ProviderChanging", f"identity provider {arn} was created meanwhile")
            return created
        missing = [a for a in spec.audiences if a not in observed.audiences]
        tags = dict(observed.tags)
        if user_tag(owner) not in tags:
            tags[user_tag(owner)] = owner.ref
        if missing:
            tags[AUDIENCES_TAG] = " ".join(sorted(observed.added_codes | {audience_code(a) for a in missing}))
        changed = {k: v for k, v in tags.items() if observed.tags.get(k) != v}
        if missing and before_adding is not None and self.planned is None:
            before_adding(arn, missing)
        # The record first: a crash after it leaves a claim, never an unrecorded change.
        if changed:
            with self._write(f"tag identity provider {arn} as used by {owner.ref}") as writing:
                if writing:
                    call(
                        self.iam,
                        "tag_open_id_connect_provider",
                        OpenIDConnectProviderArn=arn,
                        Tags=[{"Key": k, "Value": v} for k, v in sorted(changed.items())],
                    )
        for audience in missing:
            with self._write(f"add audience {audience} to {arn}") as writing:
                if writing:
                    call(
                        self.iam,
                        "add_client_id_to_open_id_connect_provider",
                        OpenIDConnectProviderArn=arn,
                        ClientID=audience,
                    )
        return ObservedProvider(arn=arn, audiences=observed.audiences + missing, tags=tags), missing, False

    def _create(self, spec: ProviderSpec, tags: dict[str, str]) -> bool:
        """Create the provider (in a plan: describe the create); False when one of its URL exists already."""
        try:
            with self._write(f"create identity provider https://{spec.host}") as writing:
                if not writing:
                    return True
                call(
                    self.iam,
                    "create_open_id_connect_provider",
                    Url=f"https://{spec.host}",
                    ClientIDList=spec.audiences,
                    ThumbprintList=spec.thumbprints,
                    Tags=[{"Key": k, "Value": v} for k, v in sorted(tags.items())],
                )
        except AwsClientError as exc:
            if exc.code == "EntityAlreadyExists":
                return False
            raise
        return True

    def release(
        self,
        arn: str,
        owner: Owner,
        made: Callable[[ObservedProvider], bool],
        shared: Collection[str],
        defender_audiences: Collection[str],
        hand_over: Callable[[str, list[str]], None] | None = None,
    ) -> str | None:
        """This object no longer relies on the provider: what was done, for an Event; None when nothing was.

        Re-reads the provider, so the decision rests on its live audiences and users, not on what status says.
        ``made(observed)``: the operator's record says this object created it; ``shared``: the audiences the record
        says this object added to it; only Defender's own audiences (``defender_audiences``) are ever taken away.
        When other objects still use a provider this object made, ``hand_over(arn, their refs)`` passes the making
        on to them. The user tag goes last, so a crash half-way leaves the record that lets the next attempt finish.
        """
        observed = self.observe_arn(arn)
        mine = user_tag(owner)
        if observed is None or mine not in observed.tags:
            return None
        created = observed.created_by_operator and made(observed)
        others = sorted(v for k, v in observed.users().items() if k != mine)
        if others:
            if created and hand_over is not None:
                hand_over(arn, others)
            self._untag(arn, [mine])
            # Two objects releasing at once each see the other as a user and leave: look once more, and finish the
            # job as the last user when the others left meanwhile.
            again = self.observe_arn(arn)
            if again is None or again.users():
                return f"left identity provider {arn} in place for {', '.join(others)}"
            observed = again
        tagged = [a for a in observed.audiences if audience_code(a) in observed.added_codes]
        ours = [
            a
            for a in observed.audiences
            if a in defender_audiences and (a in shared or (created and a in tagged))
        ]
        foreign = [a for a in observed.audiences if a not in ours]
        if created and not foreign:
            self._delete(arn)
            return f"deleted identity provider {arn}"
        for audience in ours:
            self._remove_audience(arn, audience)
        self._untag(
            arn, [k for k in (AUDIENCES_TAG, CREATED_TAG, MANAGED_BY_TAG) if k in observed.tags] + [mine]
        )
        return f"removed audiences {', '.join(ours) or '(none)'} from {arn}; it keeps {', '.join(foreign)}"

    def _untag(self, arn: str, keys: list[str]) -> None:
        with self._write(f"untag identity provider {arn}") as writing:
            if writing:
                call(
                    self.iam,
                    "untag_open_id_connect_provider",
                    OpenIDConnectProviderArn=arn,
                    TagKeys=keys,
                )

    def _remove_audience(self, arn: str, audience: str) -> None:
        try:
            with self._write(f"remove audience {audience} from {arn}") as writing:
                if writing:
                    call(
                        self.iam,
                        "remove_client_id_from_open_id_connect_provider",
                        OpenIDConnectProviderArn=arn,
                        ClientID=audience,
                    )
        except AwsClientError as exc:
            if exc.code != "NoSuchEntity":
                raise

    def _delete(self, arn: str) -> None:
        try:
            with self._write(f"delete identity provider {arn}") as writing:
                if writing:
                    call(
                        self.iam,
                        "delete_open_id_connect_provider",
                        OpenIDConnectProviderArn=arn,
                    )
        except AwsClientError as exc:
            if exc.code != "NoSuchEntity":
                raise
