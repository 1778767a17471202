"""The operator's own Kubernetes calls: status writes, Secret reads and Events (Kopf does the watching).

Status is merge-patched through the status subresource with the whole status (conditions replace the list); it is
written only when it changed, so an object in a steady state causes no writes. Events are core/v1 Events from
component ``defender-operator``.
"""

import base64
import secrets
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .api.names import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .reconcile.model import Event

COMPONENT = "defender-operator"


def load_config() -> client.ApiClient:
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        try:
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(name) from None
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def post_event(self, namespace: str, name: str, uid: str, event: Event) -> None:
        now = datetime.now(UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=f"{name}.{secrets.token_hex(8)}", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=API_VERSION, kind=KIND, name=name, namespace=namespace, uid=uid
            ),
            reason=event.reason,
            message=event.message[:1024],
            type=event.type,
            source=client.V1EventSource(component=COMPONENT),
            reporting_component=COMPONENT,
            first_timestamp=now,
            last_timestamp=now,
            count=1,
        )
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as exc:
            if exc.status not in (
                403,
                404,
            ):  # events are best effort; a missing permission must not stop reconciling
                raise
