"""The write journal of one pass: what is recorded before the operator changes anything in a cloud.

Two records are kept, in this order, before the first write of a pass:

1. The object's OnboardingRecord (``api/record.py``, cluster-scoped, written only by the operator): the spec the
   pass acts on (cleanup uses it, never a spec changed later), what allowed it, and when the first write to each cloud
   was about to be made, the moment that makes the second proof of ownership (``proofs.py``). The Secrets the
   object's credentials come from are held (a finalizer) first, so cleanup can still sign in when the namespace goes.
2. ``status.firstCloudWrite``, the same moments where users and the claim ranking (``claims.py``) see them. Only
   the first of them needs its own status write before the cloud write: the ranking asks only whether the object has
   written anywhere, and the record is what cleanup reads, so a later cloud's first moment goes into the status with
   the pass's result (an object's first Azure write costs one status write less). An object with no status at all
   (a new one) gets none before its first pass's result: the record alone is written ahead, then the object is read
   to make sure it is still there, as the status write would have. Until that result, the book keeps the claim in
   this process, another process's book finds the write in the record (``_recorded_elsewhere``), and a pass of the
   object that the index ranks behind another (its result lost to a kill) asks its own record
   (``restore_unshown_write``). A new object costs one record write per cloud and one status write.

A record made in this pass for writes that the cloud all refused (a terminal error: nothing changed) is withdrawn
at the end of the pass, so an object whose first write was denied is still one that never wrote anything.

Each status write replaces the whole status and is conditional on the resourceVersion the pass last saw (that of
its copy of the object, then each write's answer). The copy can be older than an earlier pass's record (Kopf's body
follows the watch, which may lag); a status built from it would erase that record. The API server refuses such a
write (409), and the journal then takes the records from the live object and writes once more: no read before a
write, only after a refusal. The OnboardingRecord is read once in a pass that writes, and written conditionally too.
"""

import contextlib
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..api.names import SECRET_FINALIZER_PREFIX
from ..api.record import ObjectRef, OnboardingRecordSpec, SharedAudiences, record_labels
from ..api.spec import AWSConnectorSpec
from ..api.status import AWSConnectorStatus, FirstCloudWrite
from ..errors import CloudError, RetryableError, TerminalError
from ..kube import Kube, ObjectGone, RecordConflict, SecretDeleting, StatusConflict
from . import role_names
from .claims import Ticket, conflict_message
from .ledger import CloudName, Unrecorded
from .model import Target
from .proofs import Proof, moment


def now() -> str:
    """A record's moment: UTC, to the millisecond (a cloud's creation time is compared with it)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def secret_finalizer(uid: str) -> str:
    return f"{SECRET_FINALIZER_PREFIX}{uid}"


def secrets_of(spec: AWSConnectorSpec) -> set[str]:
    """The Secrets (in the object's namespace) its credentials come from."""
    names = set()
    if spec.aws.credentials is not None and spec.aws.credentials.secret_ref is not None:
        names.add(spec.aws.credentials.secret_ref.name)
    if spec.azure.credentials_secret_ref is not None:
        names.add(spec.azure.credentials_secret_ref.name)
    return names


def raw_secret_names(spec: dict[str, Any]) -> set[str]:
    """The Secrets a spec names, read without parsing it (a spec the operator cannot parse still lets them go)."""
    aws = ((spec.get("aws") or {}).get("credentials") or {}).get("secretRef") or {}
    azure = (spec.get("azure") or {}).get("credentialsSecretRef") or {}
    return {str(ref["name"]) for ref in (aws, azure) if isinstance(ref, dict) and ref.get("name")}


def release_held(
    kube: Kube, namespace: str, uid: str, spec: dict[str, Any], record: OnboardingRecordSpec | None = None
) -> None:
    """Cleanup is over (or not wanted: Orphan): the Secrets held for it are let go, then the record is deleted."""
    if record is None:
        found = kube.read_record(uid)
        record = OnboardingRecordSpec.model_validate(found[0]) if found is not None else None
    names = raw_secret_names(spec) | (raw_secret_names(record.connector) if record is not None else set())
    for name in sorted(names):
        kube.release_secret(namespace, name, secret_finalizer(uid))
    kube.delete_record(uid)


def abandon(kube: Kube, namespace: str, uid: str) -> bool:
    """The object went without its cleanup (someone removed the operator's finalizer): let go of the Secrets held for
    it (they would otherwise stay Terminating for ever), and mark its record abandoned, an inventory of what may be
    left in the clouds. Once marked, no pass writes the record or holds a Secret again (``WriteJournal._snapshot``).
    A pass that writes the record meanwhile (holding the Secrets again first) makes it read, let go and marked again,
    as often as it takes: it used to give up after two such writes, and an organization's pass, which writes the record
    for each member account, then went on writing for the gone object and held its Secrets for good. A gone object's
    passes end (no new one starts), so this ends too. False when there is no record (cleanup ran, or nothing was
    written)."""
    found = kube.read_record(uid)
    if found is None:
        return False
    while found is not None:
        record = OnboardingRecordSpec.model_validate(found[0])
        for name in sorted(raw_secret_names(record.connector)):
            kube.release_secret(namespace, name, secret_finalizer(uid))
        if record.abandoned is not None:
            break
        marked = record.model_copy(update={"abandoned": now()})
        body = marked.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            kube.write_record(uid, body, found[1], record_labels(record.object.namespace, record.object.name))
            break
        except RecordConflict:
            found = kube.read_record(uid)
    return True


def recorded_spec(target: Target) -> dict[str, Any]:
    """The spec as the pass acts on it, role names resolved (so cleanup finds the roles the stack has, whatever a
    later release calls them by default)."""
    names = role_names.resolve(target.spec, target.status)
    spec = role_names.with_names(target.spec, names)
    return spec.model_dump(by_alias=True, mode="json", exclude_none=True)


class RecordBook:
    """One object's OnboardingRecord: read at most once per pass (only by a pass that writes), written before the
    writes it records, each write conditional on the version read."""

    def __init__(self, kube: Kube, target: Target, skew_seconds: float) -> None:
        self.kube, self.target, self.skew = kube, target, timedelta(seconds=skew_seconds)
        self.record: OnboardingRecordSpec | None = None
        self.version: str | None = None
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> OnboardingRecordSpec | None:
        if not self._loaded:
            found = self.kube.read_record(self.target.uid)
            self.record, self.version = (
                (OnboardingRecordSpec.model_validate(found[0]), found[1]) if found else (None, None)
            )
            self._loaded = True
        return self.record

    def fresh(self) -> OnboardingRecordSpec:
        """A record for an object that has none yet, from what its status says (objects from before the record
        existed): what was written, its StackSet, the regions of the access entries it made. The first writes are
        the live status's when the pass's copy claims any: the copy can be older than a withdrawal (a write refused
        since, its record deleted), and a claim taken from it would be recorded for a write never made."""
        t, status = self.target, self.target.status
        written = (status.first_cloud_write or FirstCloudWrite()).model_copy()
        if written.aws or written.azure:
            live = self.kube.live_status(t.namespace, t.name, t.uid)
            if live is not None:
                claims = live[0].get("firstCloudWrite") or {}
                written = FirstCloudWrite(aws=claims.get("aws"), azure=claims.get("azure"))
        granted = (
            sorted({c.region for c in status.eks.clusters if c.access == "Granted"}) if status.eks else []
        )
        org = t.spec.aws.organization
        member_role = org.member_provider_role_name if org is not None else None
        return OnboardingRecordSpec(
            object=ObjectRef(namespace=t.namespace, name=t.name, uid=t.uid),
            instance=t.instance,
            written=written,
            stack_set_id=status.organization.stack_set_id if status.organization else None,
            eks_regions=granted,
            # an object that may have set up member providers before they were recorded: which ones is not known
            member_accounts=None if member_role and written.aws else [],
        )

    def change(self, edit: Callable[[OnboardingRecordSpec], OnboardingRecordSpec]) -> OnboardingRecordSpec:
        """Apply ``edit`` to the record and write it if that changed anything (read again once after a conflict)."""
        for attempt in (1, 2):
            current = self.load()
            wanted = edit(current if current is not None else self.fresh())
            if wanted == current:
                return wanted
            body = wanted.model_dump(by_alias=True, mode="json", exclude_none=True)
            try:
                self.version = self.kube.write_record(
                    self.target.uid,
                    body,
                    self.version,
                    record_labels(self.target.namespace, self.target.name),
                )
            except RecordConflict:
                if attempt == 2:
                    raise
                self._loaded = False
                continue
            self.record = wanted
            return wanted
        raise AssertionError("not reached")

    def proof(self, cloud: CloudName) -> Proof:
        return proof_of(self.load(), self.target.status, cloud, self.skew)


def proof_of(
    record: OnboardingRecordSpec | None, status: AWSConnectorStatus, cloud: CloudName, skew: timedelta
) -> Proof:
    """The record's proof for ``cloud``; for an object from before records, what its status says was written."""
    written = getattr(record.written, cloud) if record is not None else None
    if written is None:
        first = status.first_cloud_write
        written = getattr(first, cloud) if first is not None else None
    adopted = frozenset(record.adopted) if record is not None else frozenset()
    return Proof(written=moment(written), adopted=adopted, skew=skew)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _uses(record: OnboardingRecordSpec, arn: str) -> bool:
    """Whether the record's own spec makes its object use the identity provider ``arn``: one in its AWS account
    (the user tags that name the object are tags, which anyone who may tag can write)."""
    account = str((record.connector.get("aws") or {}).get("accountId", ""))
    return bool(account) and f":iam::{account}:oidc-provider/" in arn


def hand_over(kube: Kube, target: Target, resource_id: str, refs: list[str]) -> None:
    """``target`` made ``resource_id`` (an identity provider) and leaves it to the objects named by ``refs`` (owner
    refs, from the provider's user tags) that still use it: each one's record lists it as adopted, so the last of them
    may delete it. Only well-formed refs of this installation whose record's own spec uses the provider are given it
    (the tags are forgeable); a failure to hand over leaves the provider in place, never cleanup stuck."""
    for ref in refs:
        parts = ref.split("/")
        if (
            len(parts) != 3
            or parts[0] != target.instance
            or not _DNS_LABEL.match(parts[1])
            or not _DNS_SUBDOMAIN.match(parts[2])
        ):
            continue
        try:
            found_records = kube.find_records(parts[1], parts[2])
        except ApiException:
            continue
        for uid, found, version in found_records:
            record = OnboardingRecordSpec.model_validate(found)
            if (
                record.object.name != parts[2]
                or resource_id in record.adopted
                or not _uses(record, resource_id)
            ):
                continue
            updated = record.model_copy(update={"adopted": sorted({*record.adopted, resource_id})})
            body = updated.model_dump(by_alias=True, mode="json", exclude_none=True)
            try:
                kube.write_record(uid, body, version, record_labels(parts[1], parts[2]))
            except (RecordConflict, ApiException):
                continue  # changed meanwhile by its own pass: handed over again on this object's next attempt


class WriteJournal:
    """``writes`` of one pass (``reconcile()``'s ledger), and every status write of the pass.

    Before the first write to a cloud, records the moment in the OnboardingRecord and in
    ``status.firstCloudWrite.<cloud>`` (both writes must succeed first); counts which writes took effect.
    """

    def __init__(
        self,
        kube: Kube,
        target: Target,
        version: str,
        allowed_by: str | None = None,
        skew_seconds: float = 120,
        ticket: Ticket | None = None,
    ) -> None:
        self.kube, self.target, self.version, self.allowed_by = kube, target, version, allowed_by
        # the object's place in the claim book (claims.py); None: no other object to refuse
        self.ticket = ticket
        self._claimed = False  # this pass took its onboarding in the claim book
        self.refused = False  # the claim book refused this pass: another object was about to write, or wrote
        self.book = RecordBook(kube, target, skew_seconds)
        self.stored = target.status  # the status of the object at self.version, as far as this pass knows
        self.written = (target.status.first_cloud_write or FirstCloudWrite()).model_copy()
        self.new: set[str] = set()  # clouds recorded in this pass
        # no status yet: the pass's result is the object's first status, and nothing is written in it before
        self.unannounced = unwritten(target.status)
        self._live = False  # the object was found still there after this pass's record was written
        self.effective: set[str] = set()  # clouds with a write that took effect (or may have) in this pass
        self._snapshot_current = False  # the record holds this pass's spec

    # --- the record ---------------------------------------------------------------------------------------------------

    def _snapshot(self, clouds: tuple[CloudName, ...] = (), stamp: str | None = None) -> OnboardingRecordSpec:
        """Hold the credentials' Secrets, then write the record: this pass's spec, what allowed it and, for
        ``clouds``, the moment of the first write (an earlier one found in the record is kept). Nothing is held or
        written for an object that went without its cleanup (its record marked abandoned) while the pass ran."""
        spec = recorded_spec(self.target)
        needed = secrets_of(self.target.spec)
        finalizer = secret_finalizer(self.target.uid)
        before = self.book.load()
        if before is not None and before.abandoned is not None:
            raise _object_gone()
        recorded = raw_secret_names(before.connector) if before is not None else set()
        for name in sorted(needed):
            refusal = self._hold(name, finalizer)
            if refusal is not None:
                # Held in this call for no record: let go again, or a later spec that no longer names them would
                # leave them held for ever (the release of Secrets a spec stops naming reads the record).
                for held in sorted(needed - recorded - {name}):
                    self.kube.release_secret(self.target.namespace, held, finalizer)
                raise refusal

        def edit(record: OnboardingRecordSpec) -> OnboardingRecordSpec:
            if record.abandoned is not None:  # marked since it was read: found on a conflict's second read
                raise _object_gone()
            written = record.written.model_copy()
            for cloud in clouds:
                if getattr(written, cloud) is None:
                    setattr(written, cloud, stamp)
            return record.model_copy(
                update={
                    "generation": self.target.generation,
                    "allowed_by": self.allowed_by,
                    "connector": spec,
                    "written": written,
                }
            )

        try:
            record = self.book.change(edit)
        except TerminalError:
            for name in sorted(needed):  # its Secrets were let go when it was marked: not held again
                self.kube.release_secret(self.target.namespace, name, finalizer)
            raise
        for cloud in ("aws", "azure"):
            stamp_of = getattr(record.written, cloud)
            if stamp_of is not None and getattr(self.written, cloud) is None:
                setattr(self.written, cloud, stamp_of)
        self._snapshot_current = True
        if before is not None:  # Secrets the spec no longer names: cleanup will not need them
            gone = raw_secret_names(before.connector) - needed
            for name in sorted(gone):
                self.kube.release_secret(self.target.namespace, name, finalizer)
        return record

    def _hold(self, name: str, finalizer: str) -> CloudError | None:
        """Hold one of the spec's Secrets for cleanup; why nothing may be written when it cannot be held. A Secret
        the spec names may be gone by now, even one the pass signed in with: a record naming it would leave cleanup
        blocked for good on a Secret that does not exist (the campaign's seed 65159), where the record's earlier
        spec, with the credentials that wrote until now, can clean up."""
        namespace = self.target.namespace
        spec = self.target.spec
        refs = (
            (
                "spec.aws.credentials.secretRef",
                spec.aws.credentials.secret_ref if spec.aws.credentials else None,
            ),
            ("spec.azure.credentialsSecretRef", spec.azure.credentials_secret_ref),
        )
        fields = " and ".join(field for field, ref in refs if ref is not None and ref.name == name)
        try:
            if self.kube.hold_secret(namespace, name, finalizer):
                return None
            reason, problem = "CredentialsSecretMissing", f"Secret {namespace}/{name} does not exist"
            way_out = "Create it, or point the spec at one that exists"
        except SecretDeleting as exc:
            reason, problem = "CredentialsSecretDeleting", str(exc)
            way_out = "Create the Secret again under another name and point the spec at it"
        except RetryableError as exc:  # it kept changing: nothing wrong with it
            return exc
        return TerminalError(
            reason,
            f"{fields}: {problem}. The operator holds the Secrets it writes with until cleanup has used them, so it "
            f"writes nothing with this one. {way_out}; update Secrets in place (kubectl apply) rather than deleting "
            "and re-creating them.",
        )

    def proof(self, cloud: CloudName) -> Proof:
        return self.book.proof(cloud)

    def recorded(self) -> OnboardingRecordSpec | None:
        return self.book.load()

    def hand_over(self, resource_id: str, refs: list[str]) -> None:
        hand_over(self.kube, self.target, resource_id, refs)

    def eks_regions_cleared(self, regions: list[str]) -> None:
        record = self.book.load()
        if record is not None and set(regions) & set(record.eks_regions):
            self.book.change(
                lambda r: r.model_copy(
                    update={
                        "eks_regions": sorted(set(r.eks_regions) - set(regions)),
                        "eks_entries": None
                        if r.eks_entries is None
                        else [e for e in r.eks_entries if e.split("/", 1)[0] not in regions],
                    }
                )
            )

    def eks_entry_removed(self, region: str, cluster: str) -> None:
        key = f"{region}/{cluster}"
        record = self.book.load()
        if record is not None and record.eks_entries is not None and key in record.eks_entries:
            self.book.change(
                lambda r: r.model_copy(update={"eks_entries": [e for e in r.eks_entries or [] if e != key]})
            )

    def adopted(self, resource_id: str) -> None:
        """Record that this object takes over ``resource_id`` (before the write that does)."""
        self.book.change(
            lambda r: (
                r
                if resource_id in r.adopted
                else r.model_copy(update={"adopted": sorted({*r.adopted, resource_id})})
            )
        )

    def shared(self, arn: str, audiences: list[str]) -> None:
        """Record the audiences this object is about to add to a provider it did not create."""

        def edit(record: OnboardingRecordSpec) -> OnboardingRecordSpec:
            known = record.shared(arn)
            if set(audiences) <= set(known):
                return record
            others = [s for s in record.shared_audiences if s.arn != arn]
            entry = SharedAudiences(arn=arn, audiences=sorted({*known, *audiences}))
            return record.model_copy(
                update={"shared_audiences": sorted([*others, entry], key=lambda s: s.arn)}
            )

        self.book.change(edit)

    def unshared(self, arn: str) -> None:
        """The audiences on ``arn`` were removed again (or the provider is gone)."""
        record = self.book.load()
        if record is not None and record.shared(arn):
            self.book.change(
                lambda r: r.model_copy(
                    update={"shared_audiences": [s for s in r.shared_audiences if s.arn != arn]}
                )
            )

    def stack_set(self, stack_set_id: str) -> None:
        self.book.change(lambda r: r.model_copy(update={"stack_set_id": stack_set_id}))

    def members(self, accounts: list[str]) -> None:
        """Record the member accounts whose providers the pass is about to look after (one write for them all; a
        record made here holds the spec and its Secrets like any other)."""
        record = self.book.load()
        if not accounts or (
            record is not None
            and (record.member_accounts is None or set(accounts) <= set(record.member_accounts))
        ):
            return
        if not self._snapshot_current:
            self._snapshot()
        self.book.change(
            lambda r: (
                r
                if r.member_accounts is None
                else r.model_copy(update={"member_accounts": sorted({*r.member_accounts, *accounts})})
            )
        )

    def members_released(self, accounts: list[str]) -> None:
        record = self.book.load()
        if (
            record is not None
            and record.member_accounts is not None
            and set(accounts) & set(record.member_accounts)
        ):
            self.book.change(
                lambda r: r.model_copy(
                    update={"member_accounts": [a for a in r.member_accounts or [] if a not in accounts]}
                )
            )

    def eks_entry(self, region: str, cluster: str) -> None:
        """Record the access entry about to be made, and its region (cleanup visits the recorded regions)."""
        key = f"{region}/{cluster}"
        eks = self.target.status.eks
        # A record from before entries were kept starts from the entries status shows this object made.
        legacy = {f"{c.region}/{c.name}" for c in eks.clusters if c.access == "Granted"} if eks else set()
        self.book.change(
            lambda r: (
                r
                if region in r.eks_regions and key in (r.eks_entries or [])
                else r.model_copy(
                    update={
                        "eks_regions": sorted({*r.eks_regions, region}),
                        "eks_entries": sorted({*(legacy if r.eks_entries is None else r.eks_entries), key}),
                    }
                )
            )
        )

    # --- the status --------------------------------------------------------------------------------------------------

    def announce(self, status: AWSConnectorStatus, ahead: tuple[CloudName, ...] = ()) -> None:
        """Write the status that says a new generation is being worked on, with the record of the first writes the
        pass expects to make in ``ahead`` (``engine.writes_ahead``): one status write, not two. Such a record is
        withdrawn like any other when the pass ends without the write."""
        ahead = tuple(cloud for cloud in ahead if getattr(self.written, cloud) is None)
        announced = status.model_copy(deep=True)
        if ahead:
            try:
                self._record(announced, ahead)
                return
            except TerminalError:
                # Nothing may be written (a Secret the record must hold is being deleted): announced without the
                # record, and the pass meets the same refusal where it would write, as its Stalled reason.
                pass
        self._put(announced, lambda: self._known)

    def checkpoint(self, status: AWSConnectorStatus) -> None:
        """Write a status decided from the object's copy alone, before any cloud is read (the catalog rollout's
        decision): only over that very copy, never over a newer one (StatusConflict: look again, from a newer copy)."""
        status.first_cloud_write = self.record
        if _dump(self.stored) != _dump(status):
            self._put(status, lambda: self.record, attempts=1)

    def finish(self, status: AWSConnectorStatus) -> None:
        """Write the pass's resulting status (with its records, the withdrawn ones left out) if it changed: it wins
        over one written since the pass's copy was read (on a conflict it is written again over the newer version),
        since the pass read the clouds."""
        withdrawn = self.new - self.effective
        empty = None
        if withdrawn:
            record = self.book.change(
                lambda r: r.model_copy(update={"written": self._without(r.written, withdrawn)})
            )
            if not (record.written.aws or record.written.azure):
                empty = record
        elif self._marks_to_check(status):
            empty = self._marks_from_record()
        status.first_cloud_write = self.record
        if self.new or _dump(self.stored) != _dump(status):
            # A withdrawal the status does not show would rank the object as one that wrote for good: tried harder
            # than other writes against changes to the object meanwhile (each try reads the live object first).
            self._put(status, lambda: self.record, attempts=5 if withdrawn else 2)
        if empty is not None:
            # Never wrote: no record, no Secret held. Only once the status no longer claims a write, so that a
            # record made later from the status (``RecordBook.fresh``) never takes the withdrawn claim.
            release_held(self.kube, self.target.namespace, self.target.uid, empty.connector, empty)
            self.book.record, self.book.version = None, None

    def _marks_to_check(self, status: AWSConnectorStatus) -> bool:
        """A pass that wrote nothing and ends not Ready while the status says the object wrote: the mark may be one a
        failed pass could not take out of the status after withdrawing it from the record (the status write refused
        or timed out), which would rank the object as one that wrote for good. Checked against the record then (a
        read, for stalled objects only: a Ready object's passes read nothing more)."""
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions)
        return not self.effective and bool(self.written.aws or self.written.azure) and not ready

    def _marks_from_record(self) -> OnboardingRecordSpec | None:
        """Keep the status's marks the record has (the authority; an object without a record keeps its status's, as
        objects from before records did). Returns the record when it has no write left (the caller lets it and its
        Secrets go once the status says so too)."""
        record = self.book.load()
        if record is None or record.abandoned is not None:
            return None
        for cloud in ("aws", "azure"):
            if getattr(record.written, cloud) is None:
                setattr(self.written, cloud, None)
        return None if (record.written.aws or record.written.azure) else record

    def settle(self) -> None:
        """At the end of the pass, however it ended: a claim it took in the claim book is given back unless the
        OnboardingRecord, the authority, now has a write (then the object ranks as one that wrote, and keeps it until
        it is gone or its writes are withdrawn by a later pass). A pass that failed before its record, whose writes
        were all refused, or whose object went without its cleanup holds nothing after it."""
        if self.ticket is None or not self._claimed:
            return
        record = self.book.record if self.book.loaded else None
        if record is None or record.abandoned is not None or not (record.written.aws or record.written.azure):
            self.ticket.release()

    @contextlib.contextmanager
    def __call__(self, cloud: CloudName) -> Iterator[None]:
        self._claim()
        if not self._recorded(cloud):
            # The status needs its own write only while it does not yet rank the object as one that has written,
            # and never for an object with no status yet (the module's docstring). For an object gone since, the
            # write is in its record, which the operator marks abandoned: an inventory of what is left.
            claimed = self.stored.first_cloud_write
            ranked = claimed is not None and bool(claimed.aws or claimed.azure)
            quiet = ranked or self.unannounced
            self._record(None if quiet else self.stored.model_copy(deep=True), (cloud,))
        elif not self._snapshot_current:
            self._snapshot()
        try:
            yield
        except TerminalError:
            raise  # refused: the cloud changed nothing
        except BaseException:
            self.effective.add(cloud)  # a timeout or a crash: it may have taken effect
            raise
        self.effective.add(cloud)

    def _recorded(self, cloud: CloudName) -> bool:
        """Whether the OnboardingRecord, the authority, has the first write to ``cloud``. The status is not asked:
        a pass's copy of the object can be older than an earlier pass's withdrawal of its record (a write refused),
        and a write made on its word would be in no record."""
        record = self.book.load()
        return record is not None and getattr(record.written, cloud) is not None

    @property
    def record(self) -> FirstCloudWrite | None:
        written = self._without(self.written, self.new - self.effective)
        return written if written.aws or written.azure else None

    @staticmethod
    def _without(written: FirstCloudWrite, clouds: set[str]) -> FirstCloudWrite:
        kept = written.model_copy()
        for cloud in clouds:
            setattr(kept, cloud, None)
        return kept

    @property
    def _known(self) -> FirstCloudWrite | None:
        return self.written.model_copy() if self.written.aws or self.written.azure else None

    def _record(self, status: AWSConnectorStatus | None, clouds: tuple[CloudName, ...]) -> None:
        """Record ``clouds`` as about to be written: in the OnboardingRecord, then in ``status`` (None: no status
        write of its own, see ``__call__``). The status write, or for an object with no status yet a read of it,
        raises :class:`ObjectGone` when the object is gone: nothing is written for an object no cleanup will
        follow, and a record this leaves with no write is deleted (with the Secrets it held), since the operator
        marks a gone object's record as it goes, which may be before this pass made it (the campaign's seed
        62200). Once the record has a write, a deletion seen later finds it there."""
        self._claim()
        stamp = now()
        record = self._snapshot(clouds, stamp)
        for cloud in clouds:
            if getattr(record.written, cloud) == stamp:  # not found recorded by an earlier pass meanwhile
                self.new.add(cloud)
        if status is not None or (self.unannounced and not self._live):
            try:
                if status is not None:
                    self._put(status, lambda: self._known, must_exist=True)
                else:
                    self._still_there()
            except BaseException as exc:
                # Nothing was written in a cloud yet: a record kept for this call would be a write never made, which
                # the next passes would take into the status (the record keeps an earlier moment), ranking the object
                # as one that wrote for good, credentials that never work and all.
                self._withdraw({cloud for cloud in clouds if cloud in self.new})
                if isinstance(exc, ObjectGone):
                    self._let_go_if_empty()
                raise

    def _still_there(self) -> None:
        """What the announcing status write tells by its success, for an object that has none: it still exists."""
        t = self.target
        if not self.kube.still_there(t.namespace, t.name, t.uid):
            raise ObjectGone(f"{t.namespace}/{t.name} (uid {t.uid}) is gone")
        self._live = True

    def restore_unshown_write(self) -> bool:
        """Whether the OnboardingRecord, the authority, has a write of this object that its status does not show:
        the status write that would have (the first pass's result, for a new object) was lost to a kill or a
        failure. If so, this pass's status shows it again. Read only for a pass that the claims in the index rank
        behind another object."""
        shown = self.stored.first_cloud_write
        if shown is not None and (shown.aws or shown.azure):
            return False
        record = self.book.load()
        if record is None or record.abandoned is not None or not (record.written.aws or record.written.azure):
            return False
        self.written = record.written.model_copy()
        return True

    def _let_go_if_empty(self) -> None:
        """The object is gone and this pass's record has no write: an inventory of nothing, which no cleanup and no
        later pass would ever delete. It goes, and the Secrets held for it are let go."""
        record = self.book.record if self.book.loaded else None
        if record is None or record.written.aws or record.written.azure:
            return  # nothing recorded here, or a write of an earlier pass: the record stays, marked abandoned
        release_held(self.kube, self.target.namespace, self.target.uid, record.connector, record)
        self.book.record, self.book.version = None, None

    def _withdraw(self, clouds: set[str]) -> None:
        """Take ``clouds``, recorded in this pass and not written, out of the record again (best effort: the pass is
        failing already)."""
        if not clouds:
            return
        try:
            self.book.change(lambda r: r.model_copy(update={"written": self._without(r.written, clouds)}))
        except Exception:  # the pass's own error is the one to report; the record stays as it was
            return
        self.new -= clouds
        self.written = self._without(self.written, clouds)

    def _claim(self) -> None:
        """Before a write while the status shows none: take the object's onboarding in the claim book, or stop
        (nothing recorded, nothing written) when another object holds it. The rank decided that this object may try;
        the book decides, at the last moment, that it alone writes. ``settle`` gives it back at the pass's end
        unless a write is recorded."""
        if self.ticket is None or self._claimed:
            return
        record = self.book.load()  # read anyway by the write that follows
        if record is not None and record.abandoned is None and (record.written.aws or record.written.azure):
            return  # the authority says it wrote: another object asking is refused by this record
        holder = self.ticket.take() or self._recorded_elsewhere()
        if holder is not None:
            self.refused = True
            spec = self.target.spec
            raise TerminalError(
                "ConnectorConflict",
                conflict_message(holder, self.target.key, spec.aws.account_id, spec.azure.subscription_id),
            )
        self._claimed = True

    def _recorded_elsewhere(self) -> str | None:
        """Taken in the book: unless another object of the onboarding has a write in its OnboardingRecord that its
        status does not show (its process died in between), which keeps its claim (given back here)."""
        assert self.ticket is not None
        for other in self.ticket.unwritten():
            found = self.kube.read_record(other.uid)
            if found is None:
                continue
            record = OnboardingRecordSpec.model_validate(found[0])
            if record.abandoned is None and (record.written.aws or record.written.azure):
                self.ticket.release()
                return other.ref
        return None

    def _put(
        self,
        status: AWSConnectorStatus,
        records: Callable[[], FirstCloudWrite | None],
        must_exist: bool = False,
        attempts: int = 2,
    ) -> None:
        namespace, name = self.target.namespace, self.target.name
        for attempt in range(1, attempts + 1):
            status.first_cloud_write = records()
            try:
                version = self.kube.write_status(
                    namespace, name, _dump(status), self.version, uid=self.target.uid, must_exist=must_exist
                )
            except StatusConflict:
                if attempt == attempts:
                    raise
                live = self.kube.live_status(namespace, name, self.target.uid)
                if live is None:
                    if must_exist:
                        raise ObjectGone(f"{namespace}/{name} (uid {self.target.uid}) is gone") from None
                    return  # deleted meanwhile: nothing to report on
                found, self.version = live
                self._merge(found.get("firstCloudWrite") or {})
                continue
            if version is not None:
                self.version = version
            self.stored = status  # callers pass a status nothing else changes afterwards
            return

    def _merge(self, live: dict[str, Any]) -> None:
        """The live object's first-write records, newer than the pass's copy: a record written since is kept, and
        one the copy had that is gone since (an earlier pass withdrew it: its write was refused) is not written
        back, unless this pass recorded it itself or the OnboardingRecord it read has it."""
        record = self.book.record if self.book.loaded else None
        for cloud in ("aws", "azure"):
            stamp = live.get(cloud)
            if stamp and getattr(self.written, cloud) is None:
                setattr(self.written, cloud, stamp)
            elif (
                not stamp
                and cloud not in self.new
                and (record is None or getattr(record.written, cloud) is None)
            ):
                setattr(self.written, cloud, None)


def _object_gone() -> TerminalError:
    return TerminalError(
        "ObjectGone",
        "the object went without its cleanup (its finalizer was removed) while a pass ran: nothing more is written "
        "for it; its OnboardingRecord lists what was",
    )


def unwritten(status: AWSConnectorStatus) -> bool:
    """The operator never wrote the object's status: nothing in it but what the CRD defaults (observedGeneration
    0)."""
    return not status.observed_generation and not any(_dump(status).values())


def _dump(status: AWSConnectorStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


class CleanupLedger(Unrecorded):
    """The ledger of a cleanup: proofs from the record read when cleanup began; writes are not journaled (the record
    already says what was written), and what goes is taken off the record as it goes."""

    def __init__(
        self, kube: Kube, target: Target, record: OnboardingRecordSpec | None, skew_seconds: float
    ) -> None:
        self.kube, self.target, self.record = kube, target, record
        self.skew = timedelta(seconds=skew_seconds)

    def __call__(self, cloud: CloudName) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()

    def proof(self, cloud: CloudName) -> Proof:
        return proof_of(self.record, self.target.status, cloud, self.skew)

    def recorded(self) -> OnboardingRecordSpec | None:
        return self.record

    def hand_over(self, resource_id: str, refs: list[str]) -> None:
        hand_over(self.kube, self.target, resource_id, refs)
