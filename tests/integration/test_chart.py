"""The Helm chart on the sandbox's real API server, and the operator running with exactly the chart's RBAC."""

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from defender_operator.sandbox import Sandbox, binaries
from tests.support.kube import api_client, apply, kubectl, wait_for
from tests.support.manifests import base_manifest
from tests.support.operator import OperatorProcess, start_operator, wait_condition, wait_gone
from tests.support.paths import REPO

pytestmark = pytest.mark.integration
CHART = REPO / "charts" / "defender-operator"
RELEASE_NAMESPACE = "defender-operator-system"


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.helm()), *args], capture_output=True, text=True, timeout=120, check=False
    )


def template(*values: str) -> list[dict[str, Any]]:
    kube_version = binaries.KUBERNETES_VERSION.lstrip("v")
    result = helm(
        "template",
        "defender-operator",
        str(CHART),
        "--namespace",
        RELEASE_NAMESPACE,
        "--kube-version",
        kube_version,
        *values,
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_helm_lint_is_clean() -> None:
    result = helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_the_chart_carries_the_generated_crds_and_admission_policy() -> None:
    for name in ("awsconnectors.yaml", "onboardingpolicies.yaml", "admission.yaml"):
        assert (CHART / "files" / name).read_text() == (REPO / "crds" / name).read_text()
    docs = template()
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert sorted(c["spec"]["names"]["kind"] for c in crds) == [
        "AWSConnector",
        "ClusterOnboardingPolicy",
        "EffectiveOnboardingPolicy",
        "OnboardingRecord",
    ]
    assert all(c["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"} for c in crds)
    assert {d["kind"] for d in docs} >= {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    policies = {d["metadata"]["name"] for d in docs if d["kind"] == "ValidatingAdmissionPolicy"}
    assert {
        "awsconnectors.defender-operator.io",
        "awsconnectors-deleting.defender-operator.io",
        "awsconnectors-handler-state.defender-operator.io",
    } <= policies
    (guard,) = [
        d for d in docs if d["metadata"]["name"].endswith("-secret-guard") and "matchConditions" in d["spec"]
    ]
    assert "system:serviceaccount:" in guard["spec"]["matchConditions"][0]["expression"]
    assert not {"ValidatingAdmissionPolicy"} & {
        d["kind"] for d in template("--set", "admissionPolicy.enabled=false")
    }
    granted = template("--set-json", 'onboardingPolicies={"payments":{"namespaces":{"names":["payments"]}}}')
    (policy,) = [d for d in granted if d["kind"] == "ClusterOnboardingPolicy"]
    assert policy["metadata"]["name"] == "payments" and policy["spec"]["namespaces"] == {
        "names": ["payments"]
    }
    # a hook Helm deletes and creates again on every upgrade: its grants outlive the deletion (docs/tenancy.md)
    assert policy["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation"
    assert policy["metadata"]["annotations"]["defender-operator.io/deletion-grace"] == "true"
    assert not [d for d in template("--set", "crds.enabled=false") if d["kind"] == "CustomResourceDefinition"]


def test_deployment_is_locked_down() -> None:
    (deployment,) = [d for d in template() if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2 and spec["strategy"]["type"] == "RollingUpdate"  # leader election: one acts
    env = {e["name"]: e.get("value") for e in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["DEFENDER_OPERATOR_LEADER_ELECTION"] == "true" and env["DEFENDER_OPERATOR_LEASE_NAME"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"
    }
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert (
        container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        and container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    )
    assert container["resources"]["requests"] and container["resources"]["limits"]


def test_the_chart_is_configurable_like_cert_managers() -> None:
    digest = "sha256:" + "a" * 64
    docs = template(
        "--set", "global.imageRegistry=example.com",  # a subchart receives `global`: the schema allows it
        "--set", f"image.digest={digest}",
        "--set", "proxy.httpsProxy=http://proxy:3128",
        "--set", "proxy.noProxy=10.0.0.1",
        "--set-json", 'extraEnv=[{"name":"EXTRA","value":"1"}]',
        "--set-json", 'extraArgs=["--log-level","DEBUG"]',
        "--set-json", 'extraVolumes=[{"name":"ca","configMap":{"name":"corp-ca"}}]',
        "--set-json", 'extraVolumeMounts=[{"name":"ca","mountPath":"/etc/corp-ca"}]',
        "--set", "livenessProbe.periodSeconds=7",
        "--set", "podDisruptionBudget.enabled=true",
        "--set", "rbac.readSecrets=false",
    )  # fmt: skip
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"].endswith(f"@{digest}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HTTPS_PROXY"] == "http://proxy:3128" and env["NO_PROXY"] == "10.0.0.1" and env["EXTRA"] == "1"
    assert container["args"] == ["run", "--log-level", "DEBUG"]
    assert {"name": "ca", "mountPath": "/etc/corp-ca"} in container["volumeMounts"]
    assert {"name": "ca", "configMap": {"name": "corp-ca"}} in pod["volumes"]
    assert (
        container["livenessProbe"]["periodSeconds"] == 7
        and container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    )
    assert [d for d in docs if d["kind"] == "PodDisruptionBudget"]
    rules = [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d.get("rules", [])]
    assert not [r for r in rules if "secrets" in r.get("resources", [])]
    # The ServiceMonitor and PrometheusRule whenever enabled: helm template (and Argo CD, Flux) render without a
    # cluster, so a Capabilities check dropped them silently there.
    monitored = template(
        "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.scrapeTimeout=10s"
    )  # fmt: skip
    (monitor,) = [d for d in monitored if d["kind"] == "ServiceMonitor"]
    assert monitor["spec"]["endpoints"][0]["scrapeTimeout"] == "10s"
    (rule,) = [d for d in template("--set", "prometheusRule.enabled=true") if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    assert not [d for d in template() if d["kind"] in ("ServiceMonitor", "PrometheusRule", "NetworkPolicy")]


def test_names_labels_spread_network_policy_extra_objects_and_policy_readers() -> None:
    docs = template(
        "--set", "fullnameOverride=defender",
        "--set", "commonLabels.team=security",
        "--set", "networkPolicy.enabled=true",
        "--set-json", 'networkPolicy.metricsFrom=[{"namespaceSelector":{"matchLabels":{"name":"monitoring"}}}]',
        "--set-json", 'extraObjects=[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"{{ .Release.Name }}-x"}}]',
        "--set", "rbac.policiesReadableByAllUsers=false",
    )  # fmt: skip
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == "defender"
    assert all(d["metadata"]["labels"]["team"] == "security" for d in docs if d["kind"] != "ConfigMap")
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "security"
    (spread,) = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"]
    assert policy["spec"]["ingress"][0]["from"][0] == {
        "namespaceSelector": {"matchLabels": {"name": "monitoring"}}
    }
    assert {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]} >= {53, 443}
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"] == ["defender-operator-x"]
    assert not [d for d in docs if d["metadata"]["name"].endswith("-policy-reader")]
    assert [d for d in template() if d["metadata"]["name"].endswith("-policy-reader")]
    renamed = template("--set", "nameOverride=dfc")
    (deployment,) = [d for d in renamed if d["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == "defender-operator-dfc"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "dfc"
    # helm test: a hook pod of its own that reads the operator's metrics through their Service, let in by the
    # NetworkPolicy; what it runs is run against a real operator in test_operator_with_the_chart_rbac_reconciles_to_ready
    (probe,) = [d for d in docs if d["kind"] == "Pod"]
    assert probe["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (service,) = [d for d in docs if d["kind"] == "Service"]
    labels = probe["metadata"]["labels"].items()
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"],
        policy["spec"]["podSelector"]["matchLabels"],
    ):
        assert not selector.items() <= labels, "the test pod would be one of the operator's pods"
    assert any(
        peer.get("podSelector", {}).get("matchLabels", {}).items() <= labels
        for peer in policy["spec"]["ingress"][0]["from"]
    )
    namespace, port = service["metadata"]["namespace"], service["spec"]["ports"][0]["port"]
    url = f"http://{service['metadata']['name']}.{namespace}:{port}/metrics"
    assert f'url = "{url}"' in probe["spec"]["containers"][0]["args"][0]
    assert not [d for d in template("--set", "metrics.service.enabled=false") if d["kind"] == "Pod"]


def test_the_packaged_chart_installs_on_the_api_server(kubeconfig: Path, tmp_path: Path) -> None:
    """docs/production.md, "Build and publish": helm package, then what the package renders is accepted by the
    sandbox's API server (server-side dry run, so nothing is left behind)."""
    packaged = helm("package", str(CHART), "--destination", str(tmp_path))
    assert packaged.returncode == 0, packaged.stderr
    (archive,) = tmp_path.glob("defender-operator-*.tgz")
    rendered = helm(
        "template", "defender-operator", str(archive), "--namespace", RELEASE_NAMESPACE,
        "--kube-version", binaries.KUBERNETES_VERSION.lstrip("v"),
        "--set-json", 'onboardingPolicies={"packaged":{"namespaces":{"names":["payments"]}}}',
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    kubectl(kubeconfig, "create", "namespace", RELEASE_NAMESPACE)  # may exist already
    applied = kubectl(
        kubeconfig, "apply", "--server-side", "--dry-run=server", "--force-conflicts", "-f", "-",
        stdin=rendered.stdout,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    assert (
        "clusteronboardingpolicy.defender-operator.io/packaged serverside-applied (server dry run)"
        in applied.stdout
    )


def test_values_schema_rejects_bad_values() -> None:
    result = helm("template", "x", str(CHART), "--kube-version", "1.37.2", "--set", "operator.workers=0")
    assert result.returncode != 0 and "workers" in result.stderr


def test_identity_annotations() -> None:
    docs = template(
        "--set",
        "serviceAccount.awsRoleArn=arn:aws:iam::111122223333:role/op",
        "--set",
        "serviceAccount.azureClientId=abc",
    )
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/op",
        "azure.workload.identity/client-id": "abc",
    }
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"


@pytest.fixture(scope="module")
def watched(kubeconfig: Path) -> Iterator[tuple[str, str]]:
    watched, other = f"watched-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    for namespace in (watched, other, RELEASE_NAMESPACE):
        kubectl(kubeconfig, "create", "namespace", namespace)
    docs = template("--set-json", f'watchNamespaces=["{watched}"]')
    result = apply(kubeconfig, docs, "--server-side", "--force-conflicts", "--field-manager", "helm")
    assert result.returncode == 0, result.stderr
    yield watched, other


@pytest.fixture(scope="module")
def chart_operator(
    sandbox: Sandbox, watched: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator signed in as the chart's ServiceAccount (a client certificate for the same user name and groups)."""
    namespace = watched[0]
    identity = sandbox.control_plane.issue_user(
        f"system:serviceaccount:{RELEASE_NAMESPACE}:defender-operator",
        ["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}", "system:authenticated"],
    )
    running = start_operator(
        sandbox,
        tmp_path_factory.mktemp("chart-operator"),
        kubeconfig=identity,
        namespaces=[namespace],
        extra_env={  # leader election as the chart configures it, with only the chart's RBAC
            "DEFENDER_OPERATOR_LEADER_ELECTION": "true",
            "POD_NAMESPACE": RELEASE_NAMESPACE,
        },
    )
    try:
        yield running
    finally:
        running.stop()


def test_the_rendered_chart_applied_cleanly(kubeconfig: Path, watched: tuple[str, str]) -> None:
    deployment = json.loads(
        kubectl(
            kubeconfig,
            "get",
            "deployment",
            "-n",
            RELEASE_NAMESPACE,
            "defender-operator",
            "-o",
            "json",
            check=True,
        ).stdout
    )
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "defender-operator"
    roles = json.loads(kubectl(kubeconfig, "get", "role", "-n", watched[0], "-o", "json", check=True).stdout)[
        "items"
    ]
    assert [r["metadata"]["name"] for r in roles] == ["defender-operator"]
    assert (
        kubectl(kubeconfig, "get", "clusterrole", "defender-operator").returncode != 0
    )  # namespaced install


def test_operator_with_the_chart_rbac_reconciles_to_ready(
    sandbox: Sandbox, kubeconfig: Path, watched: tuple[str, str], chart_operator: OperatorProcess
) -> None:
    namespace = watched[0]
    manifest = base_manifest("rbac", namespace, "300011112222")
    manifest["spec"]["aws"]["credentials"] = {"roleArn": "arn:aws:iam::300011112222:role/defender-onboarding"}
    manifest["spec"]["azure"]["resourceGroup"] = "rg-rbac"
    assert apply(kubeconfig, manifest).returncode == 0
    wait_condition(kubeconfig, namespace, "rbac", "Ready", "True", timeout=90)
    for series in (
        'controller_runtime_reconcile_total{controller="awsconnector",result="success"}',
        "controller_runtime_reconcile_time_seconds_bucket",
        'defender_operator_cloud_requests_total{cloud="aws",operation="create_stack",outcome="ok",service="cloudformation"}',
        'defender_operator_cloud_requests_total{cloud="azure",operation="PutSecurityConnector",outcome="ok",service="security"}',
        "defender_operator_cloud_throttled_total",
        "defender_operator_drift_repairs_total",
        'defender_operator_awsconnectors{ready="True"} 1.0',
    ):
        # the series are updated just after the status write that the wait above saw
        wait_for(lambda series=series: series in chart_operator.metrics(), 30, f"{series} on /metrics")
    # `helm test`'s script, as the chart renders it, against this operator (kwok runs no container)
    (probe,) = [d for d in template() if d["kind"] == "Pod"]
    script = re.sub(
        r"http://[^/]+/",
        f"http://127.0.0.1:{chart_operator.metrics_port}/",
        probe["spec"]["containers"][0]["args"][0],
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert (run.returncode, run.stdout) == (0, "metrics served\n"), run.stderr
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "rbac", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "rbac", timeout=90)
    log = chart_operator.log()
    # 403 as a status code, not as digits inside a port number, a duration or a uid ("...-decf-403a-...")
    assert "Forbidden" not in log and not re.search(r"(?<![\w.-])403(?!\w)", log), log


def test_the_operator_identity_cannot_read_secrets_it_does_not_watch(
    sandbox: Sandbox, kubeconfig: Path, watched: tuple[str, str]
) -> None:
    watched_namespace, other = watched
    kubectl(kubeconfig, "create", "secret", "generic", "creds", "-n", other, "--from-literal=clientSecret=x")
    kubectl(
        kubeconfig,
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        watched_namespace,
        "--from-literal=clientSecret=x",
    )
    identity = sandbox.control_plane.issue_user(
        f"system:serviceaccount:{RELEASE_NAMESPACE}:defender-operator",
        ["system:serviceaccounts", f"system:serviceaccounts:{RELEASE_NAMESPACE}", "system:authenticated"],
    )
    core = client.CoreV1Api(api_client(identity))
    assert core.read_namespaced_secret("creds", watched_namespace).data
    with pytest.raises(ApiException) as info:
        core.read_namespaced_secret("creds", other)
    assert info.value.status == 403
    with pytest.raises(ApiException) as info:
        core.list_namespaced_secret(watched_namespace)  # get only: no listing
    assert info.value.status == 403
