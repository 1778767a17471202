"""Role names across releases: today's defaults for new objects, the names live roles already have for objects
onboarded earlier (recorded, or read from their ARNs), and a rename only when the spec asks for one."""

from typing import Any

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.api.status import AWSConnectorStatus
from defender_operator.cli import crd_yaml
from defender_operator.reconcile.role_names import resolve, with_names
from defender_operator.render.iam import role_documents
from tests.support.manifests import base_manifest

OLD = "DefenderForCloud-Containers-K8s"


def spec(**role_names: str) -> AWSConnectorSpec:
    body: dict[str, Any] = base_manifest()["spec"]
    if role_names:
        body = {**body, "aws": {**body["aws"], "roleNames": role_names}}
    return AWSConnectorSpec.model_validate(body)


def status(**aws: Any) -> AWSConnectorStatus:
    return AWSConnectorStatus.model_validate({"aws": aws} if aws else {})


def test_a_new_object_gets_the_portals_current_names() -> None:
    names = resolve(spec(), status())
    assert names["containersK8s"] == "MDCContainersK8sRole"
    assert names["dataCollection"] == "MDCContainersK8sDataCollectionRole"
    assert names["cloudWatchToKinesis"] == "MDCContainersK8sCloudWatchToKinesisRole"
    assert names["kinesisToS3"] == "MDCContainersK8sKinesisToS3Role"


def test_an_object_onboarded_under_the_old_defaults_keeps_its_roles() -> None:
    """Before names were recorded: the ARNs of the live roles say what they are called."""
    onboarded = status(roles={"containersK8s": f"arn:aws:iam::111122223333:role/{OLD}"})
    names = resolve(spec(), onboarded)
    assert names["containersK8s"] == OLD
    rendered = {r.key: r.name for r in role_documents(with_names(spec(), names))}
    assert rendered["containersK8s"] == OLD


def test_recorded_names_hold_until_the_spec_sets_one() -> None:
    recorded = status(roleNames={"containersK8s": OLD}, roles={"containersK8s": "arn:aws:iam::1:role/Other"})
    assert resolve(spec(), recorded)["containersK8s"] == OLD
    assert resolve(spec(containersK8s="Renamed"), recorded)["containersK8s"] == "Renamed"


def test_the_crd_fills_no_role_name_defaults() -> None:
    """Otherwise the API server writes the defaults of the day into every object (roleNames itself defaults to {}),
    and a later release's defaults never reach it: objects created under the old CRD hold the old names in their
    spec, and keep them."""
    crd = crd_yaml()
    section = crd[crd.index("roleNames:") : crd.index("roleNames:") + 6000]
    names = section.split("rolePolicies:")[0]
    assert [line.strip() for line in names.splitlines() if "default:" in line] == ["default: {}"]
    assert "Default: MDCContainersK8sRole." in section
