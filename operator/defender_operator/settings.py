"""Operator configuration: environment variables (DEFENDER_OPERATOR_*), overridden by ``run`` flags.

Cloud SDKs keep their own standard variables (AWS_REGION, AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AZURE_CLIENT_ID,
AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST, ...); the settings here are only what the
operator adds. docs/configuration.md lists every one.
"""

import argparse
from typing import Literal, get_args, get_origin

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEFENDER_OPERATOR_", extra="ignore")

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty means all.")
    instance: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]{0,62}$",
        description="Name of this installation in the owner mark of everything it creates in AWS and Azure. Default: "
        "cluster-<uid of namespace kube-system>, different in every cluster. Set it to keep ownership across a "
        "cluster rebuild; never give two installations the same one.",
    )
    aws_region: str = Field(
        default="us-east-1", description="Region for the STS, IAM and CloudFormation clients."
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        description="AWS endpoint override (e.g. the sandbox's moto); AWS_ENDPOINT_URL works too.",
    )
    azure_arm_endpoint: str = Field(
        default="https://management.azure.com", description="Azure Resource Manager URL."
    )
    azure_graph_endpoint: str = Field(
        default="https://graph.microsoft.com",
        description="Microsoft Graph URL (read-only: the CIEM application's service principal).",
    )
    azure_authority_host: str | None = Field(
        default=None,
        description="Entra authority (default: the public cloud's); AZURE_AUTHORITY_HOST works too.",
    )
    azure_ca_bundle: str | None = Field(
        default=None, description="CA bundle to trust for ARM and Entra (sandbox)."
    )
    resync_seconds: float = Field(
        default=300.0, gt=0, description="Interval of the drift-detection pass per object."
    )
    resync_jitter: float = Field(
        default=0.1, ge=0, le=1, description="Random spread of the interval, as a fraction."
    )
    drift_check_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often CloudFormation drift detection checks the roles of a stack.",
    )
    deep_check_seconds: float = Field(
        default=900.0,
        gt=0,
        description="How often a pass also checks the identity providers and reads Defender's health; the passes "
        "in between read only the stack and the connector (a provider deleted out of band is noticed this late).",
    )
    in_progress_seconds: float = Field(
        default=15.0, gt=0, description="How soon to look again while CloudFormation is working."
    )
    policy_relist_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How often the policies and the namespaces' labels are listed again, whatever the watches say: a "
        "watch can go silent without ending (an API server's watch cache stalled after a restart: campaign seed "
        "40011), and a policy deleted or a label taken off then would go on granting until the watch ends (minutes). "
        "A grant holds where both the list and the watch's view allow it (docs/tenancy.md).",
    )
    policy_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="How long a deleted ClusterOnboardingPolicy annotated defender-operator.io/deletion-grace: "
        "\"true\" (the chart's) still grants, unless a policy of its name comes back: Helm replaces the chart's "
        "policies by deleting and creating them on every upgrade (docs/tenancy.md). Any other deletion, and an edit "
        "that narrows a policy, apply at once; 0: every deletion too.",
    )
    claim_grace_seconds: float = Field(
        default=600.0,
        ge=0,
        description="How long an AWSConnector that has written nothing and is not Ready keeps other objects of the "
        "same AWS account and subscription waiting (ConnectorConflict); after that, the first of them to write holds "
        "the account. Any tenant can create an object for any account with credentials that never work: without "
        "this bound, it would hold the account from the team granted it (docs/tenancy.md).",
    )
    backoff_base_seconds: float = Field(default=5.0, gt=0, description="First delay after a retryable error.")
    backoff_max_seconds: float = Field(
        default=600.0, gt=0, description="Longest delay after repeated errors."
    )
    workers: int = Field(default=8, ge=1, description="Objects reconciled at the same time.")
    catalog_file: str | None = Field(
        default=None,
        description="Use this IAM catalog file instead of the one the operator ships (a Microsoft change staged "
        "before a release, or the previous catalog kept while a rollout is looked into): docs/catalog-rollout.md.",
    )
    catalog_rollout_batch: int = Field(
        default=10,
        ge=1,
        description="Objects whose stacks and StackSets are updated to a new catalog at the same time (a batch); "
        "the next batch starts when the whole batch is done: docs/catalog-rollout.md.",
    )
    catalog_rollout_pause_seconds: float = Field(
        default=60.0, ge=0, description="Pause between two batches of a catalog rollout."
    )
    catalog_rollout_tolerated_failures: int = Field(
        default=0,
        ge=0,
        description="Objects whose update to a new catalog may have failed before the rollout halts (0: the first "
        "failure halts it). The admin's way past failures that are one account's own (a tenant's SCP), which no "
        "tenant can undo: docs/catalog-rollout.md.",
    )
    catalog_rollout_canaries: str = Field(
        default="",
        pattern=r"^([a-z0-9][-a-z0-9]*(/[a-z0-9][-a-z0-9.]*)?(,[a-z0-9][-a-z0-9]*(/[a-z0-9][-a-z0-9.]*)?)*)?$",
        description="Comma-separated namespaces and namespace/name objects upgraded to a new catalog before all "
        "others: the others wait until every canary is on it.",
    )
    clock_skew_seconds: float = Field(
        default=120.0,
        ge=0,
        description="How far the clouds' clocks may be behind the operator's when a resource's creation time is "
        "compared with the moment the operator recorded before writing it (the second proof of ownership, "
        "docs/tenancy.md).",
    )
    aws_client_cache: int = Field(
        default=128,
        ge=8,
        description="AWS clients kept between passes (least recently used go first). Each holds about 0.13 MiB; with "
        "more objects than fit, clients are built again per pass (about 3 ms each): docs/performance.md.",
    )
    kube_connections: int = Field(
        default=12,
        ge=1,
        description="Connections to the Kubernetes API server open at once for Kopf's requests, beyond one per watch; "
        "more requests wait for a free one. Kopf alone has no limit, which at start-up over many objects opened one "
        "connection per object: docs/performance.md.",
    )
    gc_young_threshold: int = Field(
        default=2000,
        ge=0,
        description="Allocations between two collections of Python's youngest garbage-collector generation (Python's "
        "own default is 700; 0 keeps it). A higher value spends less CPU collecting while many objects converge, for "
        "a few MiB more between collections: docs/performance.md.",
    )
    probe_port: int = Field(default=8081, ge=0, description="Port of /healthz and /readyz (0 disables).")
    metrics_port: int = Field(default=8080, ge=0, description="Port of /metrics (0 disables).")
    leader_election: bool = Field(
        default=False,
        description="Take part in leader election on a Lease: with several replicas, only the leader acts, and a "
        "standby takes over when it dies (within the lease duration).",
    )
    lease_name: str = Field(
        default="defender-operator",
        description="Name of the Lease; give every shard (a Deployment with its own namespaces) its own.",
    )
    lease_namespace: str | None = Field(
        default=None,
        description="Namespace of the Lease. Default: the pod's namespace (POD_NAMESPACE), else default.",
    )
    lease_duration_seconds: float = Field(
        default=15.0,
        gt=0,
        description="How long a standby waits after the leader's last renewal before taking over.",
    )
    renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long the leader keeps acting without a successful renewal before it exits.",
    )
    retry_period_seconds: float = Field(
        default=2.0, gt=0, description="How often the Lease is renewed or tried."
    )
    log_format: Literal["json", "text"] = Field(default="json", description="Log format.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")


def _env(name: str) -> str:
    return f"{Settings.model_config.get('env_prefix', '')}{name.upper()}"


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return "all" if value == [] else "none" if value is None else str(value)


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``defender-operator run``, one per setting, generated from :class:`Settings`: each says what it does,
    its default and the environment variable behind it, and overrides that variable."""
    for name, field in Settings.model_fields.items():
        env, default = _env(name), _default(field)
        text = f"{field.description} (default: {default}; env {env})"
        if name == "namespaces":
            parser.add_argument("-n", "--namespace", action="append", dest="namespaces", help=text)
            parser.add_argument(
                "-A", "--all-namespaces", action="store_true", help="watch every namespace (default)"
            )
            continue
        flag = "--" + name.replace("_", "-")
        annotation = field.annotation
        choices = get_args(annotation) if get_origin(annotation) is Literal else None
        kind = int if annotation is int else float if annotation is float else str
        parser.add_argument(
            flag, dest=name, type=kind, choices=choices, metavar=None if choices else name.upper(), help=text
        )


def settings_from(args: argparse.Namespace | None = None) -> Settings:
    overrides = {}
    if args is not None:
        overrides = {
            k: v
            for k, v in vars(args).items()
            if k in Settings.model_fields
            and v is not None
            and not (k == "namespaces" and args.all_namespaces)
        }
    return Settings(**overrides)
