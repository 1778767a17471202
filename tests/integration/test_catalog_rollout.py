"""A new IAM catalog reaches a fleet at the rollout's pace (reconcile/rollout.py, docs/catalog-rollout.md).

Fifty objects onboarded with the packaged catalog; the operator restarted with another one (one more action in the
CSPM role's policies, as a Microsoft change looks): the canary goes first, its update is refused (AccessDenied, as an
SCP would), and the rollout halts there with every other stack untouched; once the cause is gone the canary
succeeds, the rest follow in batches no larger than the setting, the operator is killed mid-rollout, and the next
process finishes it. A watch on the objects judges the bound on every status change.
"""

import json
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from defender_operator.render.catalog import catalog_version, use_catalog
from defender_operator.sandbox import Sandbox
from tests.support.catalogs import ADDED_ACTION, changed_catalog
from tests.support.kube import api_client, kubectl, wait_for
from tests.support.onboarding import account_of, aws_in, manifest, request_reconcile
from tests.support.operator import OperatorProcess, prepared_operator, start_operator

FLEET = 50
BATCH = 10
WHERE = ("defender-operator.io", "v1alpha1")


def _version(path: Path) -> str:
    use_catalog(str(path))
    try:
        return catalog_version()
    finally:
        use_catalog(None)


class Judge(threading.Thread):
    """Follows every status change of the namespace's objects: how many updates to catalog ``version`` were under
    way at once (status.catalog.upgrading, not Stalled), and whether any other object began before the canary ended."""

    def __init__(self, api: client.CustomObjectsApi, namespace: str, version: str, canary: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace, self.version, self.canary = api, namespace, version, canary
        self.under_way: set[str] = set()
        self.most = 0
        self.canary_done = False
        self.before_canary: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        version: str | None = None
        while not self.stopping.is_set():
            try:
                for event in watch.Watch().stream(
                    self.api.list_namespaced_custom_object,
                    *WHERE,
                    self.namespace,
                    "awsconnectors",
                    resource_version=version,
                    timeout_seconds=5,
                ):
                    obj = event["object"]
                    version = obj["metadata"]["resourceVersion"]
                    self._see(obj["metadata"]["name"], obj.get("status") or {})
            except ApiException as exc:
                if exc.status != 410:
                    raise
                version = None  # too old: list again (a replay of current states, which is harmless)

    def _see(self, name: str, status: dict[str, Any]) -> None:
        found = status.get("catalog") or {}
        stalled = any(
            c["type"] == "Stalled" and c["status"] == "True" for c in status.get("conditions") or []
        )
        begun = found.get("upgrading") == self.version or found.get("version") == self.version
        if name == self.canary and found.get("version") == self.version:
            self.canary_done = True
        elif name != self.canary and begun and not self.canary_done:
            self.before_canary.append(name)
        if found.get("upgrading") == self.version and not stalled:
            self.under_way.add(name)
        else:
            self.under_way.discard(name)
        self.most = max(self.most, len(self.under_way))


@pytest.fixture
def fleet_namespace(kubeconfig: Path) -> Iterator[str]:
    namespace = f"catalog-{uuid.uuid4().hex[:8]}"
    kubectl(kubeconfig, "create", "namespace", namespace, check=True)
    yield namespace
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false")


def _status(obj: dict[str, Any], key: str) -> Any:
    return (obj.get("status") or {}).get(key)


def _ready(obj: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in _status(obj, "conditions") or [])


def _rolling_out(
    sandbox: Sandbox, tmp_path: Path, namespace: str, batch: int, canary: str
) -> OperatorProcess:
    """An operator (not started) with the changed catalog of ``tmp_path``, batches of ``batch``, ``canary`` first."""
    return prepared_operator(
        sandbox,
        tmp_path / "second",
        namespaces=[namespace],
        extra_env={
            "DEFENDER_OPERATOR_CATALOG_FILE": str(tmp_path / "catalog.json"),
            "DEFENDER_OPERATOR_CATALOG_ROLLOUT_BATCH": str(batch),
            "DEFENDER_OPERATOR_CATALOG_ROLLOUT_PAUSE_SECONDS": "0.5",
            "DEFENDER_OPERATOR_CATALOG_ROLLOUT_CANARIES": f"{namespace}/{canary}",
        },
    )


def test_a_new_catalog_reaches_50_objects_in_bounded_batches_halts_at_a_failure_and_resumes_after_a_restart(
    sandbox: Sandbox, kubeconfig: Path, tmp_path: Path, fleet_namespace: str
) -> None:
    namespace = fleet_namespace
    api = client.CustomObjectsApi(api_client(kubeconfig))
    names = [f"fleet-{i:02d}" for i in range(FLEET)]
    canary = names[0]
    manifests = {name: manifest(namespace, name, plans={}) for name in names}
    old, new = catalog_version(), _version(changed_catalog(tmp_path / "catalog.json"))
    assert old != new

    def fleet() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = api.list_namespaced_custom_object(*WHERE, namespace, "awsconnectors")[
            "items"
        ]
        return items

    def on(version: str, at_least: int = FLEET) -> bool:
        return (
            sum((_status(o, "catalog") or {}).get("version") == version and _ready(o) for o in fleet())
            >= at_least
        )

    # 1. the fleet, onboarded with the packaged catalog
    first = start_operator(sandbox, tmp_path / "first", namespaces=[namespace])
    try:
        for m in manifests.values():
            api.create_namespaced_custom_object(*WHERE, namespace, "awsconnectors", m)
        wait_for(lambda: on(old), 240, "the fleet Ready on the packaged catalog")
    finally:
        first.stop()

    # 2. the new catalog, with the canary's updates refused (AccessDenied, as an SCP would) until the cause is gone
    operator = _rolling_out(sandbox, tmp_path, namespace, BATCH, canary)
    operator.inject_aws_fault(pathPattern="UpdateStack", status=403, code="AccessDenied", count=10_000)
    judge = Judge(api, namespace, new, canary)
    judge.start()
    try:
        operator.start()

        def halted() -> bool:
            others = [_status(o, "catalog") or {} for o in fleet() if o["metadata"]["name"] != canary]
            return all(
                c.get("version") == old
                and f"updating {namespace}/{canary} to it failed" in c.get("waiting", "")
                for c in others
            )

        wait_for(halted, 90, "every other object to wait, the rollout halted at the canary")
        assert operator.aws_faulted() >= 1  # the canary tries again now and then; nobody else does
        assert operator.aws_operations().get("UpdateStack", 0) == 0  # refused ones are never forwarded
        assert "defender_operator_catalog_rollout_halted 1.0" in operator.metrics()
        refused = api.get_namespaced_custom_object(*WHERE, namespace, "awsconnectors", canary)
        stalled = next(c for c in _status(refused, "conditions") if c["type"] == "Stalled")
        assert stalled["status"] == "True" and stalled["reason"] == "AWSAccessDenied"
        assert _status(refused, "catalog") == {"version": old, "upgrading": new}

        # 3. the cause is gone: the canary, then the rest in batches; the operator killed mid-rollout, resumed
        operator.clear_aws_faults()
        request_reconcile(kubeconfig, namespace, canary)
        wait_for(lambda: on(new, 2 * BATCH), 120, "the canary and more than a batch on the new catalog")
        operator.kill()
        operator.start()
        wait_for(lambda: on(new), 240, "the whole fleet Ready on the new catalog")
        assert all("waiting" not in _status(o, "catalog") for o in fleet())
        judge.stopping.set()
        judge.join(10)
        assert judge.canary_done and judge.before_canary == []
        assert 0 < judge.most <= BATCH, f"{judge.most} updates under way at once (batch {BATCH})"
        print(f"most updates under way at once: {judge.most} (batch {BATCH})")

        # what every stack carries, what the metric and kubectl show
        for obj in fleet():
            cf = aws_in(sandbox, account_of(manifests[obj["metadata"]["name"]]), "cloudformation")
            body = cf.get_template(StackName=_status(obj, "aws")["stackName"])["TemplateBody"]
            assert ADDED_ACTION in (body if isinstance(body, str) else json.dumps(body))
        series = f'defender_operator_awsconnector_catalogs{{catalog="{new}",current="true"}} {float(FLEET)}'
        assert series in operator.metrics()
        wide = kubectl(kubeconfig, "get", "awsc", "-n", namespace, "-o", "wide", check=True).stdout
        assert "CATALOG" in wide.splitlines()[0] and wide.count(new) == FLEET
    finally:
        judge.stopping.set()
        # the operator cleans up after the fleet (other modules' operators watch every namespace)
        if operator.record is None or not operator.record.alive():
            operator.start()
        api.delete_collection_namespaced_custom_object(*WHERE, namespace, "awsconnectors")
        try:
            wait_for(lambda: not fleet(), 180, "the fleet's cleanup")
        finally:
            operator.stop()


def test_an_object_deleted_mid_rollout_gives_its_place_back_while_its_cleanup_is_blocked(
    sandbox: Sandbox, kubeconfig: Path, tmp_path: Path, fleet_namespace: str
) -> None:
    """The canary's update is refused, so the rollout halts at it; its tenant deletes it and its cleanup is refused
    too (DeleteStack denied, as broken credentials would be), so the object stays, being deleted. Deletion cannot be
    undone: the object is out of the rollout from its first cleanup, and the others go on at once, not when it is
    gone (which a tenant could put off for good)."""
    namespace = fleet_namespace
    api = client.CustomObjectsApi(api_client(kubeconfig))
    canary, others = "first", ["second", "third"]
    old, new = catalog_version(), _version(changed_catalog(tmp_path / "catalog.json"))

    def get(name: str) -> dict[str, Any]:
        found: dict[str, Any] = api.get_namespaced_custom_object(*WHERE, namespace, "awsconnectors", name)
        return found

    first = start_operator(sandbox, tmp_path / "first", namespaces=[namespace])
    try:
        for name in [canary, *others]:
            api.create_namespaced_custom_object(
                *WHERE, namespace, "awsconnectors", manifest(namespace, name, plans={})
            )
        for name in [canary, *others]:
            wait_for(lambda n=name: _ready(get(n)), 120, f"{name} Ready on the packaged catalog")
    finally:
        first.stop()
    stack = _status(get(canary), "aws")["stackName"]

    operator = _rolling_out(sandbox, tmp_path, namespace, 1, canary)
    for action in ("UpdateStack", "DeleteStack"):  # the canary's calls only
        operator.inject_aws_fault(
            pathPattern=f" {action}$",
            bodyPattern=f"StackName=([^&]*/)?{re.escape(stack)}(&|/|$)",
            status=403,
            code="AccessDenied",
            count=10_000,
        )
    try:
        operator.start()

        def halted() -> bool:
            return all(
                f"updating {namespace}/{canary} to it failed"
                in (_status(get(n), "catalog") or {}).get("waiting", "")
                for n in others
            )

        wait_for(halted, 90, "the others waiting, the rollout halted at the canary")
        assert all((_status(get(n), "catalog") or {}).get("version") == old for n in others)

        api.delete_namespaced_custom_object(*WHERE, namespace, "awsconnectors", canary)

        def cleanup_blocked() -> bool:
            stalled = [c for c in _status(get(canary), "conditions") or [] if c["type"] == "Stalled"]
            return (
                bool(stalled) and stalled[0]["status"] == "True" and stalled[0]["reason"] == "CleanupBlocked"
            )

        wait_for(cleanup_blocked, 60, "the canary's cleanup blocked by the refused DeleteStack")
        for name in others:
            wait_for(
                lambda n=name: (_status(get(n), "catalog") or {}).get("version") == new and _ready(get(n)),
                90,
                f"{name} on the new catalog while the canary is still being deleted",
            )
        # still there: its place was given back before it was gone
        assert get(canary)["metadata"].get("deletionTimestamp")
        assert "defender_operator_catalog_rollout_halted 0.0" in operator.metrics()
    finally:
        operator.clear_aws_faults()
        if operator.record is None or not operator.record.alive():
            operator.start()
        api.delete_collection_namespaced_custom_object(*WHERE, namespace, "awsconnectors")
        try:
            wait_for(
                lambda: not api.list_namespaced_custom_object(*WHERE, namespace, "awsconnectors")["items"],
                120,
                "cleanup",
            )
        finally:
            operator.stop()
