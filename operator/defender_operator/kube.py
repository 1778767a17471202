"""The operator's own Kubernetes calls: status writes, Secret reads and Events (Kopf does the watching).

Status is replaced as a whole through the status subresource (a JSON patch, so keys that must disappear, such as
the role of a plan turned off, do disappear); it is written only when it changed, so an object in a steady state
causes no writes. Events are core/v1 Events from component ``defender-operator``, aggregated the way client-go's
EventCorrelator does it: the same object, type, reason and message update one Event's count and lastTimestamp
instead of creating another (k8s.io/client-go/tools/record/events_cache.go, getEventKey).
"""

import base64
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import metrics
from .api.names import (
    API_VERSION,
    EFFECTIVE_KIND,
    EFFECTIVE_NAME,
    EFFECTIVE_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    POLICY_PLURAL,
    RECORD_KIND,
    RECORD_PLURAL,
    VERSION,
)
from .api.record import record_labels
from .errors import RetryableError
from .logs import REDACTOR
from .reconcile.model import Event

COMPONENT = "defender-operator"
JSON_PATCH = "application/json-patch+json"


def load_config(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """The operator's client of the API server (in the cluster, else from the kubeconfig: ``kubeconfig`` and
    ``context`` as kubectl's flags), every request of it counted (``rest_client_requests_total``, as client-go counts
    them: by status code, method and host; "<error>" when no answer came)."""
    if kubeconfig is None and context is None:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
    else:
        config.load_kube_config(config_file=kubeconfig, context=context)  # type: ignore[no-untyped-call]
    api = client.ApiClient()
    rest = api.rest_client
    host = urllib3.util.parse_url(api.configuration.host).netloc or ""
    send: Callable[..., Any] = rest.request

    def counted(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        try:
            response = send(method, url, *args, **kwargs)
        except ApiException as exc:
            metrics.count_request(str(exc.status), method, host)
            raise
        except Exception:
            metrics.count_request("<error>", method, host)
            raise
        metrics.count_request(str(response.status), method, host)
        return response

    setattr(rest, "request", counted)  # noqa: B010 (an instance attribute: this client's requests only)
    return api


class StatusConflict(Exception):
    """The object changed since the resourceVersion a status write was based on."""


class ObjectGone(Exception):
    """A status write that had to land found the object gone: deleted without its cleanup (its finalizer removed by
    hand, or a delete that raced the finalizer's addition: kubernetes/kubernetes#110521), or another object under
    its name."""


def _details(exc: ApiException) -> dict[str, Any]:
    """The ``details`` of the API server's Status answer (what a 404 says is not there); empty when there are none."""
    try:
        details = json.loads(exc.body or "{}").get("details") or {}
    except (TypeError, ValueError, AttributeError):
        return {}
    return details if isinstance(details, dict) else {}


def _names(exc: ApiException, name: str) -> bool:
    """Whether a 404 is the API server's answer that the object ``name`` does not exist."""
    details = _details(exc)
    return bool(details.get("name") == name and details.get("kind") == PLURAL)


def namespace_gone(exc: BaseException, namespace: str) -> bool:
    """Whether a 404 is the API server's answer that the object's namespace does not exist: ``NamespaceLifecycle``
    refuses every change of an object left in a namespace that is gone (only its deletion passes)."""
    if not isinstance(exc, ApiException) or exc.status != 404:
        return False
    details = _details(exc)
    return details.get("name") == namespace and details.get("kind") == "namespaces"


def _pointer(key: str) -> str:
    """``key`` as one step of a JSON pointer (RFC 6901): an annotation's name has slashes."""
    return key.replace("~", "~0").replace("/", "~1")


class FinalizerChange(Enum):
    """What became of a change of an object's finalizers."""

    DONE = "done"
    UNNEEDED = (
        "unneeded"  # already so, the object gone, another object under its name, or (to add) being deleted
    )
    RACED = "raced"  # the object changed meanwhile: the next event decides again
    NAMESPACE_GONE = "namespace gone"


class RecordConflict(Exception):
    """The OnboardingRecord changed (or was created) since it was read."""


class SecretDeleting(Exception):
    """A Secret the object's credentials come from is being deleted: it can no longer be held for cleanup."""


def _secret_busy(namespace: str, name: str) -> RetryableError:
    """A Secret whose finalizers could not be set in three tries: someone keeps changing it (a controller that
    writes it, or deletes and makes it again). Nothing is wrong with it: the pass or cleanup tries again later."""
    return RetryableError("CredentialsSecretBusy", f"Secret {namespace}/{name} kept changing; trying again")


_BUSY = {429, 500, 502, 503, 504}


def api_server_unavailable(exc: BaseException) -> bool:
    """The API server did not take a request: unreachable or silent (the Kubernetes client lets urllib3's errors
    through, except a TLS failure, which it turns into status 0: no answer at all), or overloaded or failing (429,
    5xx). Not a refusal such as 403 or 422, which a person must look at."""
    return isinstance(exc, urllib3.exceptions.HTTPError) or (
        isinstance(exc, ApiException) and (exc.status in _BUSY or exc.status == 0)
    )


def one_line(exc: BaseException) -> str:
    """The exception's type and first line, for a log line without a traceback."""
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"


def _redacted(status: dict[str, Any], namespace: str) -> dict[str, Any]:
    """The status with known secrets taken out of its free text, the conditions' messages: a cloud's error message
    can quote what it was sent (http.client's "Invalid header value b'...'" quotes a header). Structured fields (names,
    ARNs, times) are left exactly as they are: the operator reads them back."""
    conditions = [
        {**c, "message": REDACTOR.redact(c["message"], namespace)} if isinstance(c.get("message"), str) else c
        for c in status.get("conditions") or []
    ]
    return {**status, "conditions": conditions} if "conditions" in status else status


# the policies' and namespaces' lists (each page) and the admission parameter's read and write (handlers/tenancy.py)
FOLD_TIMEOUT_SECONDS = 30
NAMESPACE_PAGE = 500  # namespaces a page of their list holds


class Kube:
    _EVENT_CACHE = 4096  # events remembered for aggregation (client-go's LRU holds 4096 too)

    def __init__(self, api: client.ApiClient) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self._event_counts: OrderedDict[str, int] = OrderedDict()
        self._events_lock = threading.Lock()

    def write_status(
        self,
        namespace: str,
        name: str,
        status: dict[str, Any],
        resource_version: str | None = None,
        *,
        uid: str,
        must_exist: bool = False,
    ) -> str | None:
        """Replace the whole status (JSON patch ``add /status``, so keys that must disappear do) of the object
        ``uid``: the patch tests the uid first, so a status never lands on another object made under the same name
        after this one was deleted without its cleanup (its finalizer removed by hand). With ``resource_version``,
        only if the object is still at that version (Kubernetes' optimistic concurrency: a patch that sets
        metadata.resourceVersion is refused with 409 Conflict when the object has changed since; raised here as
        :class:`StatusConflict`): a status built from an old copy of the object never overwrites what was written
        after that copy, a pass's ``firstCloudWrite`` record above all, without reading the object before every
        write. Returns the object's new resourceVersion; None when the object is gone (deleted meanwhile, or another
        one has its name: nothing to report on), unless ``must_exist``: then :class:`ObjectGone` is raised."""
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "add", "path": "/status", "value": _redacted(status, namespace)},
        ]
        if resource_version is not None:
            patch.insert(1, {"op": "replace", "path": "/metadata/resourceVersion", "value": resource_version})
        try:
            answer = self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            if exc.status == 409:
                raise StatusConflict(
                    f"{namespace}/{name} changed since resourceVersion {resource_version}"
                ) from None
            # 422: a failed test (another object has the name), or a status the schema refuses (raised). A write that
            # must land believes only a 404 that names the object (not one of a resource not served yet).
            gone = (exc.status == 404 and (not must_exist or _names(exc, name))) or (
                exc.status == 422 and self.live_status(namespace, name, uid) is None
            )
            if gone:
                if must_exist:
                    raise ObjectGone(f"{namespace}/{name} (uid {uid}) is gone") from None
                return None
            raise
        return str(cast(dict[str, Any], answer)["metadata"]["resourceVersion"])

    def still_there(self, namespace: str, name: str, uid: str) -> bool:
        """Whether the object ``uid`` exists, believing only a 404 that names it, as a status write that must land
        does (not one of a resource not served yet, right after an API-server restart: raised)."""
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            )
        except ApiException as exc:
            if exc.status == 404 and _names(exc, name):
                return False
            raise
        return bool(obj["metadata"].get("uid") == uid)

    def live_status(self, namespace: str, name: str, uid: str) -> tuple[dict[str, Any], str] | None:
        """The status and resourceVersion the API server has now of the object ``uid`` (None when it is gone, also
        when another object has its name now: deleted without its cleanup and made again, so a status built for
        the old one, or a write conditional on the version returned, never lands on the new one)."""
        obj = self._live(namespace, name, uid)
        if obj is None:
            return None
        return dict(obj.get("status") or {}), str(obj["metadata"]["resourceVersion"])

    def _live(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        """The object ``uid`` as the API server has it now; None when it is gone or another object has its name."""
        try:
            obj = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj if obj["metadata"].get("uid") == uid else None

    def add_finalizer(self, namespace: str, name: str, uid: str, finalizer: str) -> FinalizerChange:
        """Put ``finalizer`` on the object ``uid`` (not on another made under its name since, nor on one being
        deleted, where the API server refuses a new finalizer)."""
        return self._change_finalizers(
            namespace, name, uid, lambda f: f if finalizer in f else [*f, finalizer], adding=True
        )

    def remove_finalizer(self, namespace: str, name: str, uid: str, finalizer: str) -> FinalizerChange:
        """Drop ``finalizer`` from the object ``uid``, not from another made under its name since."""
        return self._change_finalizers(namespace, name, uid, lambda f: [x for x in f if x != finalizer])

    def _change_finalizers(
        self,
        namespace: str,
        name: str,
        uid: str,
        change: Callable[[list[str]], list[str]],
        adding: bool = False,
    ) -> FinalizerChange:
        """A JSON patch that tests the uid and the list it changes first (the resourceVersion when there is no list),
        so a concurrent change wins and the next event decides again."""
        obj = self._live(namespace, name, uid)
        if obj is None or (adding and obj["metadata"].get("deletionTimestamp")):
            return FinalizerChange.UNNEEDED
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        wanted = change(finalizers)
        if wanted == finalizers:
            return FinalizerChange.UNNEEDED
        guard = (
            {"op": "test", "path": "/metadata/finalizers", "value": finalizers}
            if "finalizers" in meta
            else {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        )
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/uid", "value": uid},
            guard,
            {"op": "add", "path": "/metadata/finalizers", "value": wanted},
        ]
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            if namespace_gone(exc, namespace):
                return FinalizerChange.NAMESPACE_GONE
            if exc.status not in (404, 422):
                raise
            return FinalizerChange.RACED
        return FinalizerChange.DONE

    def namespace_exists(self, name: str) -> bool:
        """Whether the namespace ``name`` exists now (a read from etcd, not a cache)."""
        try:
            self.core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def delete_object(self, namespace: str, name: str, uid: str) -> bool:
        """Delete the object ``uid`` (a precondition: never another made under its name since); False when it was
        gone already, or another object has its name."""
        try:
            self.custom.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):  # gone, or another object of its name (the precondition failed)
                raise
            return False
        return True

    def remove_annotations(self, namespace: str, name: str, uid: str, annotations: Iterable[str]) -> None:
        """Drop ``annotations`` from the object ``uid`` (not another object of its name), those still there."""
        for annotation in annotations:
            self._patch_tested(
                namespace,
                name,
                uid,
                {"op": "remove", "path": f"/metadata/annotations/{_pointer(annotation)}"},
            )

    def touch(self, namespace: str, name: str, uid: str, annotation: str, value: str) -> bool:
        """Set ``annotation`` on the object ``uid`` (not another object of its name): a change, which the watch
        brings Kopf as an event of the object. False when it is gone (or changed meanwhile: an event came anyway)."""
        obj = self._live(namespace, name, uid)
        if obj is None:
            return False
        if obj["metadata"].get("annotations") is None:  # made only if still absent: never over another's map
            operations = [
                {
                    "op": "test",
                    "path": "/metadata/resourceVersion",
                    "value": obj["metadata"]["resourceVersion"],
                },
                {"op": "add", "path": "/metadata/annotations", "value": {annotation: value}},
            ]
        else:
            operations = [
                {"op": "add", "path": f"/metadata/annotations/{_pointer(annotation)}", "value": value}
            ]
        return self._patch_tested(namespace, name, uid, *operations)

    def _patch_tested(self, namespace: str, name: str, uid: str, *operations: dict[str, Any]) -> bool:
        """JSON patch operations on the object ``uid``; False, changing nothing, when it is gone, another object has
        its name, or the operations do not apply (no such annotation, a changed version)."""
        patch = [{"op": "test", "path": "/metadata/uid", "value": uid}, *operations]
        try:
            self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, name, patch, _content_type=JSON_PATCH
            )
        except ApiException as exc:
            if exc.status not in (404, 422):
                raise
            return False
        return True

    # --- the operator's own records (api/record.py) -----------------------------------------------------------------

    def read_record(self, uid: str) -> tuple[dict[str, Any], str] | None:
        """The OnboardingRecord of the object with ``uid``: its spec and resourceVersion; None when there is none."""
        try:
            found = cast(
                dict[str, Any], self.custom.get_cluster_custom_object(GROUP, VERSION, RECORD_PLURAL, uid)
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(found.get("spec") or {}), str(found["metadata"]["resourceVersion"])

    def write_record(
        self, uid: str, spec: dict[str, Any], resource_version: str | None, labels: dict[str, str]
    ) -> str:
        """Create the record (``resource_version`` None) or replace it if it is still at ``resource_version``;
        :class:`RecordConflict` otherwise. Returns the new resourceVersion."""
        body: dict[str, Any] = {
            "apiVersion": API_VERSION,
            "kind": RECORD_KIND,
            "metadata": {"name": uid, "labels": {"app.kubernetes.io/managed-by": COMPONENT, **labels}},
            "spec": spec,
        }
        try:
            if resource_version is None:
                answer = self.custom.create_cluster_custom_object(GROUP, VERSION, RECORD_PLURAL, body)
            else:
                body["metadata"]["resourceVersion"] = resource_version
                answer = self.custom.replace_cluster_custom_object(GROUP, VERSION, RECORD_PLURAL, uid, body)
        except ApiException as exc:
            if exc.status in (404, 409):  # created or changed meanwhile, or deleted since it was read
                raise RecordConflict(f"record {uid} changed since it was read") from None
            raise
        return str(cast(dict[str, Any], answer)["metadata"]["resourceVersion"])

    def find_records(self, namespace: str, name: str) -> list[tuple[str, dict[str, Any], str]]:
        """(uid, spec, resourceVersion) of the records of the objects called ``namespace``/``name``."""
        found = self.custom.list_cluster_custom_object(
            GROUP,
            VERSION,
            RECORD_PLURAL,
            label_selector=",".join(f"{k}={v}" for k, v in record_labels(namespace, name).items()),
        )
        return [
            (str(r["metadata"]["name"]), dict(r.get("spec") or {}), str(r["metadata"]["resourceVersion"]))
            for r in cast(dict[str, Any], found).get("items", [])
        ]

    def delete_record(self, uid: str) -> None:
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, RECORD_PLURAL, uid)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- Secrets that cleanup will need ---------------------------------------------------------------------------

    def hold_secret(self, namespace: str, name: str, finalizer: str) -> bool:
        """Put ``finalizer`` on the Secret, so it outlives a delete (of itself or of its namespace) until cleanup has
        used it. False when the Secret does not exist, also when it went as the finalizer was put on (the campaign's
        seed 65159: taken for held, the record named a Secret that cleanup then could not find);
        :class:`SecretDeleting` when it is being deleted (the API server takes no new finalizer then); retryable
        when it kept changing. Only ``metadata.finalizers`` is changed (a JSON patch that tests the list it
        replaces)."""
        for _ in range(3):
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return False
                raise
            meta = secret.metadata
            assert meta is not None
            finalizers = list(meta.finalizers or [])
            if finalizer in finalizers:
                return True
            if meta.deletion_timestamp is not None:
                raise SecretDeleting(f"Secret {namespace}/{name} is being deleted")
            if self._patch_secret_finalizers(
                namespace, name, meta.resource_version, [*finalizers, finalizer]
            ):
                return True
        raise _secret_busy(namespace, name)

    def release_secret(self, namespace: str, name: str, finalizer: str) -> None:
        """Take ``finalizer`` off the Secret (nothing when it is not there). Retryable when the Secret kept changing:
        a finalizer given up on silently would keep it, and its namespace, Terminating for good."""
        for _ in range(3):
            try:
                secret = self.core.read_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    return
                raise
            assert secret.metadata is not None
            finalizers = list(secret.metadata.finalizers or [])
            if finalizer not in finalizers:
                return
            after = [f for f in finalizers if f != finalizer]
            if self._patch_secret_finalizers(namespace, name, secret.metadata.resource_version, after):
                return
        raise _secret_busy(namespace, name)

    def _patch_secret_finalizers(
        self, namespace: str, name: str, version: str | None, after: list[str]
    ) -> bool:
        """Set the Secret's finalizers if it is still at ``version`` (nothing else of it is sent); False when it
        changed meanwhile or went (the caller reads it again)."""
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/metadata/finalizers", "value": after},
        ]
        try:
            self.core.patch_namespaced_secret(name, namespace, patch, _content_type=JSON_PATCH)
        except ApiException as exc:
            if exc.status in (404, 409, 422):  # the test failed (someone changed them), or the Secret went
                return False
            raise
        return True

    def list_policies(self) -> list[dict[str, Any]]:
        """Every ClusterOnboardingPolicy (bounded in time: a fold holds the lock every other fold waits on)."""
        found = self.custom.list_cluster_custom_object(
            GROUP, VERSION, POLICY_PLURAL, _request_timeout=FOLD_TIMEOUT_SECONDS
        )
        return list(cast(dict[str, Any], found).get("items", []))

    def list_namespace_labels(self, page_size: int = NAMESPACE_PAGE) -> dict[str, dict[str, str]]:
        """Every namespace's labels, listed afresh: in pages of ``page_size`` (one consistent snapshot, each page
        bounded in time as the policies' list), each read as plain JSON and only its labels kept, so a cluster of
        many namespaces is neither one long request nor the client's models of every namespace at once."""
        try:
            return self._namespace_pages(page_size)
        except ApiException as exc:
            if exc.status != 410:
                raise
            # the pages' snapshot was compacted away meanwhile: a new one
            return self._namespace_pages(page_size)

    def _namespace_pages(self, page_size: int) -> dict[str, dict[str, str]]:
        labels: dict[str, dict[str, str]] = {}
        token: str | None = None
        while True:
            found = self.core.list_namespace(
                limit=page_size,
                _continue=token,
                _preload_content=False,
                _request_timeout=FOLD_TIMEOUT_SECONDS,
            )
            page = json.loads(cast(urllib3.HTTPResponse, found).data)
            for item in page.get("items") or []:
                labels[item["metadata"]["name"]] = dict(item["metadata"].get("labels") or {})
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return labels

    def ensure_effective_policy(self, spec: dict[str, Any]) -> bool:
        """Make the EffectiveOnboardingPolicy ``effective`` carry ``spec``; True when it had to be written."""
        try:
            current = cast(
                dict[str, Any],
                self.custom.get_cluster_custom_object(
                    GROUP, VERSION, EFFECTIVE_PLURAL, EFFECTIVE_NAME, _request_timeout=FOLD_TIMEOUT_SECONDS
                ),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {
                "apiVersion": API_VERSION,
                "kind": EFFECTIVE_KIND,
                "metadata": {"name": EFFECTIVE_NAME, "labels": {"app.kubernetes.io/managed-by": COMPONENT}},
                "spec": spec,
            }
            self.custom.create_cluster_custom_object(
                GROUP, VERSION, EFFECTIVE_PLURAL, body, _request_timeout=FOLD_TIMEOUT_SECONDS
            )
            return True
        if current.get("spec") == spec:
            return False
        self.custom.patch_cluster_custom_object(
            GROUP,
            VERSION,
            EFFECTIVE_PLURAL,
            EFFECTIVE_NAME,
            [{"op": "add", "path": "/spec", "value": spec}],
            _content_type=JSON_PATCH,
            _request_timeout=FOLD_TIMEOUT_SECONDS,
        )
        return True

    def cluster_id(self) -> str:
        """The uid of the kube-system namespace: stable for the life of a cluster and different in every cluster."""
        namespace = self.core.read_namespace("kube-system")
        assert namespace.metadata is not None
        return str(namespace.metadata.uid)

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(name) from None
            raise
        # Bytes that are not UTF-8 are kept as surrogates, for credentials.py to refuse with a reason (not a crash).
        return {
            k: base64.b64decode(v).decode("utf-8", "surrogateescape") for k, v in (secret.data or {}).items()
        }

    def post_event(self, namespace: str, name: str, uid: str, event: Event) -> None:
        """Create the Event, or count one more of the same (best effort: a missing permission must not stop
        reconciling)."""
        event = Event(event.type, event.reason, REDACTOR.redact(event.message, namespace))
        key = "\x00".join(
            (COMPONENT, API_VERSION, KIND, namespace, name, uid, event.type, event.reason, event.message)
        )
        event_name = f"{name}.{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        now = datetime.now(UTC)
        try:
            with self._events_lock:
                count = self._event_counts.pop(event_name, 0)
            count = self._bump(namespace, event_name, count + 1, now) if count else 0
            if not count:  # not seen yet, or expired (Events have a TTL, an hour by default)
                count = self._create_event(namespace, name, uid, event, event_name, now)
        except ApiException as exc:
            if exc.status in (403, 404):
                return
            raise
        with self._events_lock:
            self._event_counts[event_name] = count
            while len(self._event_counts) > self._EVENT_CACHE:
                self._event_counts.popitem(last=False)

    def _create_event(
        self, namespace: str, name: str, uid: str, event: Event, event_name: str, now: datetime
    ) -> int:
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=event_name, namespace=namespace),
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
            return 1
        except ApiException as exc:
            if exc.status != 409:  # 409: the same Event exists (from before a restart): count it
                raise
        existing = self.core.read_namespaced_event(event_name, namespace)
        return self._bump(namespace, event_name, int(existing.count or 1) + 1, now) or 1

    def _bump(self, namespace: str, event_name: str, count: int, now: datetime) -> int:
        """Set the Event's count and lastTimestamp; 0 when it no longer exists."""
        try:
            self.core.patch_namespaced_event(
                event_name,
                namespace,
                {"count": count, "lastTimestamp": now.isoformat().replace("+00:00", "Z")},
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            return 0
        return count
