"""The second proof of ownership (reconcile/proofs.py), where a tag-only actor meets it."""

from datetime import UTC, datetime, timedelta

from defender_operator.aws.oidc import CREATED_TAG, ObservedProvider
from defender_operator.ownership import Owner
from defender_operator.reconcile.aws_side import live_holder
from defender_operator.reconcile.model import Target, resource_keys
from defender_operator.reconcile.proofs import Proof, made_provider
from tests.support.manifests import base_manifest

FIRST_WRITE = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
ARN = "arn:aws:iam::111122223333:oidc-provider/sts.windows.net/77777777-6666-5555-4444-333333333333/"


def provider(created: datetime, tags: dict[str, str]) -> ObservedProvider:
    return ObservedProvider(arn=ARN, audiences=["api://x"], tags=tags, created=created)


def test_a_provider_is_this_objects_only_if_its_creation_mark_names_it_and_it_is_newer_than_the_record() -> (
    None
):
    mine, theirs = Owner("c", "a", "x", "uid-a"), Owner("c", "b", "y", "uid-b")
    proof = Proof(written=FIRST_WRITE, skew=timedelta(seconds=1))
    later = FIRST_WRITE + timedelta(minutes=5)
    assert made_provider(provider(later, {CREATED_TAG: mine.ref}), mine, proof)
    # another object's provider, newer than this object's first write, with this object's user tag forged on it:
    assert not made_provider(provider(later, {CREATED_TAG: theirs.ref}), mine, proof)
    # this object's creation mark forged onto an older provider (Sentinel's):
    assert not made_provider(provider(FIRST_WRITE - timedelta(days=30), {CREATED_TAG: mine.ref}), mine, proof)
    # handed over by its maker: the record says so
    handed = Proof(written=FIRST_WRITE, adopted=frozenset({ARN}))
    assert made_provider(provider(FIRST_WRITE - timedelta(days=30), {CREATED_TAG: theirs.ref}), mine, handed)


def test_adoption_asks_the_operators_index_of_live_objects_not_the_resources_tags() -> None:
    spec = base_manifest("prod", "a", "111122223333")["spec"]
    declared = {key: ["a/prod"] for key in resource_keys("a", "prod", spec)}
    hijack = Target(
        namespace="b", name="hijack", uid="u", generation=1, spec=None, status=None,  # type: ignore[arg-type]
        holders=lambda key: declared.get(key, []),
    )  # fmt: skip
    assert live_holder(hijack, "stack/111122223333/DefenderForCloud-111122223333") == "a/prod"
    assert live_holder(hijack, "stack/111122223333/DefenderForCloud-Other") is None
