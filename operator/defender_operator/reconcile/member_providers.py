"""The Microsoft identity provider in member accounts of an organization, through a role there
(``spec.aws.organization.memberProviderRoleName``).

A member account that already has the provider (Microsoft Sentinel's, say) makes the StackSet's own provider fail
("already exists"), and a provider without Defender's audiences makes every member role unusable. With the role,
the operator treats each member account's provider as it treats the management account's: Defender's audiences
added to an existing provider (recorded in its tags, with one user tag per object), a provider created where there
is none, and on release only what this object added taken away. The member template then references the provider.

Calls: one AssumeRole (cached for 45 minutes) and one GetOpenIDConnectProvider per member account per deep pass,
plus the writes of accounts that need them. Events are one summary per pass, not one per account.
"""

from collections.abc import Callable, Iterable

from ..api.status import FailingMember, MemberProviders
from ..aws.oidc import OidcProviders, ProviderSpec
from ..errors import CloudError
from ..ownership import Owner
from .ledger import UNRECORDED_LEDGER, Ledger
from .model import Event
from .proofs import made_provider

SHOWN = 20  # failing accounts named on status


def ensure_members(
    members: Callable[[str], OidcProviders],
    spec: ProviderSpec,
    owner: Owner,
    accounts: Iterable[str],
    ledger: Ledger = UNRECORDED_LEDGER,
) -> tuple[MemberProviders, list[Event], frozenset[str]]:
    """Defender's provider, with its audiences, in each of ``accounts``; how many are ready, and where it failed
    (every such account, last: the StackSet deploys there only once its provider is ready).
    The accounts reached through the member role (those the grant allows) are recorded in the ledger before any
    change in them, in one write; audiences added to a provider this object did not create are recorded first too."""
    ready, shared, created, added, failing = 0, 0, 0, 0, []
    reached: dict[str, OidcProviders] = {}
    for account in sorted(accounts):
        try:
            reached[account] = members(account)
        except CloudError as exc:
            failing.append(FailingMember(account_id=account, reason=exc.message))
    ledger.members(sorted(reached))
    for account, providers in reached.items():
        try:
            observed, audiences, made = providers.ensure(spec, owner, before_adding=ledger.shared)
        except CloudError as exc:
            failing.append(FailingMember(account_id=account, reason=exc.message))
            continue
        ready += 1
        shared += not observed.created_by_operator
        created += made
        added += bool(audiences) and not made
    failing.sort(key=lambda member: member.account_id)
    status = MemberProviders(ready=ready, shared=shared, failing=failing[:SHOWN], failed=len(failing))
    done = []
    if created:
        done.append(f"created in {created}")
    if added:
        done.append(f"Defender's audiences added in {added}")
    return status, _event(done), frozenset(member.account_id for member in failing)


def release_members(
    members: Callable[[str], OidcProviders],
    spec: ProviderSpec,
    owner: Owner,
    accounts: Iterable[str],
    ledger: Ledger = UNRECORDED_LEDGER,
) -> tuple[list[Event], list[FailingMember], list[str]]:
    """Take away what this object added to the provider of each of ``accounts`` that the record names (found by its
    user tag on the provider and proven by the record, not through status); the accounts done leave the record. An
    account that fails (its role gone, say) is reported and does not stop the others; the caller retries those.
    The last list names the failing accounts the grant refused (no role was assumed there): what fixes those is a
    policy, not a role."""
    released, failing, gone, refused = 0, [], [], []
    proof, record = ledger.proof("aws"), ledger.recorded()
    if record is not None and record.member_accounts is not None:  # the only ones it may have changed
        accounts = set(accounts) & set(record.member_accounts)
    for account in sorted(accounts):
        try:
            providers = members(account)
            arn = spec.arn(providers.partition, account)
            done = providers.release(
                arn,
                owner,
                made=lambda observed: made_provider(observed, owner, proof),
                shared=record.shared(arn) if record is not None else [],
                defender_audiences=spec.audiences,
                hand_over=ledger.hand_over,
            )
        except CloudError as exc:
            failing.append(FailingMember(account_id=account, reason=exc.message))
            if exc.reason == "NotAllowedByPolicy":
                refused.append(account)
            continue
        if done is not None:
            released += 1
            ledger.unshared(arn)
        gone.append(account)
    ledger.members_released(gone)
    return _event([f"released in {released}"] if released else []), failing, refused


def _event(done: list[str]) -> list[Event]:
    if not done:
        return []
    return [Event("Normal", "MemberProviders", f"identity providers of member accounts: {'; '.join(done)}")]
