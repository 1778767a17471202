"""Randomized schedules: what the campaign does, as plain data, reproducible from a seed.

A schedule is a list of steps over a small pool, so that they collide: two namespaces, two object names in each, two
AWS accounts the grant allows and one it never does, an organization (its management account granted, two member
accounts), one subscription, one resource group per namespace (two objects for one account and subscription meet
as a conflict; an object created again under an old name meets what the old one left). Each step is one operation a
user, a cluster or a cloud does; ``wait`` steps are the random short pauses between them. ``generate`` is pure: the
same seed gives the same schedule, which ``describe`` prints as a readable step list.
"""

import random
from dataclasses import asdict, dataclass, field
from typing import Any

NAMESPACES = 2
NAMES = ("alpha", "beta")
ACCOUNTS = (
    2  # granted; index ACCOUNTS is an account no grant ever allows (its creates are refused at admission)
)
SLOTS = NAMESPACES * len(NAMES)  # object slots: (namespace index, name)

# Operation -> weight. Object operations name a slot; the others act on the operator, a cloud or a foreign actor.
WEIGHTS: dict[str, float] = {
    "create": 8,  # apply a manifest (random plans, regions, interval, credentials, deletion policy) to a slot
    "patch": 4,  # change the spec of a slot's object (interval, plans, regions)
    "delete": 4,  # kubectl delete, without waiting
    "pause": 1,
    "unpause": 2,
    "reconcile": 2,  # the reconcile-requested-at annotation
    "kill": 2,  # SIGKILL the operator, then start it again
    "kill_after_aws_write": 1,  # SIGKILL right after its next AWS write took effect (through the fault proxy)
    "kill_after_arm_write": 1,  # the same for ARM
    "aws_faults": 2,  # throttling / 5xx, latency or dropped connections on some AWS operations for a while
    "arm_faults": 2,  # 429 / 500, latency or dropped connections on ARM for a while
    "foreign_connector": 1,  # another team makes a connector of a slot's name in its resource group
    "foreign_stack": 1,  # another cluster's operator has a stack of the name an account's object would use
    "forge_mark": 1,  # someone who may only tag copies a slot's object's owner mark onto a foreign resource
    "sentinel": 1,  # Microsoft Sentinel adds its audience to an account's identity provider
    "delete_stack": 1,  # a person deletes an object's stack by hand
    "delete_role": 1,  # a person deletes one of an object's roles by hand (drift the operator must repair)
    "rotate_secret": 1,  # the tenant updates its AWS keys Secret in place (a new secret value)
    "delete_secret": 1,  # the tenant deletes its AWS keys Secret (held while objects still need it)
    "narrow_policy": 1,  # the admin withdraws one account from the grant
    "widen_policy": 1,  # the admin gives it back
    "replace_policy": 1,  # a Helm upgrade replaces the policy (a hook): deleted, then created again
    "unlabel_namespace": 1,  # the admin takes the label the grant selects namespaces by off a namespace
    "label_namespace": 1,  # and puts it back
    "delete_namespace": 1,  # kubectl delete namespace, objects, Secrets and all
    "apiserver_restart": 1,  # the kube-apiserver stops and starts again (a control-plane upgrade)
    # The operations below share what was once the last operation's (wait's) weight, so every earlier operation
    # keeps the draws it had and a seed's schedule keeps its other steps (the suite's seeds were chosen for them).
    "wait": 1.0,
    # an AWSConnector for the organization's management account (a StackSet for its member accounts): it took the
    # last third of wait's weight and draws one random() as a wait does (its arguments come from a generator seeded
    # with it), so every other step of a seed's schedule stays as it was
    "create_organization": 0.5,
    # a rolling update of the operator to a release with another IAM catalog, or back (a Microsoft change reaching
    # the fleet: docs/catalog-rollout.md); it took the last quarter of wait's weight, so the operations above and
    # below keep their draws
    "catalog": 0.5,
    "slow_stacks": 1,  # CloudFormation takes seconds per stack operation from now on (in progress for a while)
    "failover": 1,  # the leader dies and a standby must take over before its replacement starts (two replicas)
    "delete_policy": 1,  # the admin deletes the policy for good (no Helm upgrade brings it back)
    "second_policy": 1,  # the admin adds a second policy that grants one account again (several policies add up)
}
# Draw nothing of their own beyond one random(), as a wait draws one uniform(): see above.
TAIL_OPS = ("create_organization", "catalog", "slow_stacks", "failover", "delete_policy", "second_policy")
# The AWS operations faults are drawn from (a regular expression on the request: CreateStack and UpdateStack also
# meet the StackSet calls of those names); on an odd slot, EKS's access-entry calls instead (every method: read,
# made, policy associated, deleted), derived from the slot so that every seed keeps its draws.
AWS_FAULTY = ("CreateStack", "UpdateStack", "DescribeStacks", "CreateOpenIDConnectProvider", "AssumeRole")
EKS_FAULTY = r"^/clusters/[^/]+/access-entries"
# On slot 2, the organization's calls instead of each one drawn (derived the same way): the StackSet's writes and
# reads, and the reads of the organization's structure.
ORGANIZATION_FAULTY = {
    "CreateStack": "CreateStackSet|CreateStackInstances|DeleteStackInstances",
    "UpdateStack": "UpdateStackSet",
    "DescribeStacks": "DescribeStackSet|ListStackInstances",
    "CreateOpenIDConnectProvider": "ListAccountsForParent|ListOrganizationalUnitsForParent|ListRoots",
    "AssumeRole": "AssumeRole",
}
# On the other even slots, each drawn operation with the stack's writes of the same kind: the change sets of drift
# repair, and the rollback the operator finishes when an update met roles deleted by hand.
STACK_FAULTY = {
    "CreateStack": "CreateStack|CreateChangeSet",
    "UpdateStack": "UpdateStack|ExecuteChangeSet|ContinueUpdateRollback",
}
PLAN_CHOICES: tuple[dict[str, dict[str, bool]], ...] = (
    {},
    {"servers": {"enabled": False}},
    {"containers": {"enabled": False}, "databases": {"enabled": False}},
    {"cspm": {"enabled": True}},
)


@dataclass(frozen=True)
class Step:
    op: str
    slot: int = 0
    args: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        namespace, name = slot_of(self.slot)
        target = (
            f" ns{namespace}/{name}"
            if self.op in OBJECT_OPS
            or self.op in ("foreign_connector", "delete_stack", "delete_role", "forge_mark")
            else f" ns{namespace}"
            if self.op in NAMESPACE_OPS
            else ""
        )
        details = " ".join(f"{k}={v}" for k, v in sorted(self.args.items()))
        derived = DERIVED[self.op](self) if self.op in DERIVED else None  # from the slot: no draw of its own
        if derived is not None:
            details = f"{details} {derived}".strip()
        return f"{self.op}{target}{(' ' + details) if details else ''}"


# What a kill_after_aws_write step waits for, by slot (runner.AWS_KILLS has each one's request pattern).
AWS_KILL_TARGETS = ("stack-write", "access-entry-made", "provider-write", "access-entry-deleted")
DERIVED: dict[str, Any] = {
    "kill_after_aws_write": lambda step: f"on={aws_kill_target(step)}",
    "kill_after_arm_write": lambda step: f"on={'connector-delete' if step.slot % 2 else 'connector-put'}",
    "narrow_policy": lambda step: "(the management account)" if management_drawn(step) else None,
    "widen_policy": lambda step: "(the management account)" if management_drawn(step) else None,
}


def aws_kill_target(step: Step) -> str:
    return AWS_KILL_TARGETS[step.slot % len(AWS_KILL_TARGETS)]


def management_drawn(step: Step) -> bool:
    """A narrow_policy or widen_policy step acts on the organization's management account instead of the account
    drawn for one draw in eight (the last slot with the last account), derived so that every seed keeps its draws."""
    return step.slot == SLOTS - 1 and int(step.args.get("account", -1)) == ACCOUNTS - 1


OBJECT_OPS = {"create", "create_organization", "patch", "delete", "pause", "unpause", "reconcile"}
NAMESPACE_OPS = {"rotate_secret", "delete_secret", "delete_namespace", "unlabel_namespace", "label_namespace"}
# Never generated: the judge's own test breaks invariants on purpose with these, to show it sees them broken.
SABOTAGE_OPS = {"tamper_foreign", "leak_secret", "write_outside_grant"}


def slot_of(slot: int) -> tuple[int, str]:
    return slot // len(NAMES), NAMES[slot % len(NAMES)]


def generate(seed: int, steps: int, weights: dict[str, float] | None = None) -> list[Step]:
    """``weights`` overrides some operations' weights (a campaign aimed at them); the seeds the suite replays use
    the defaults."""
    rng = random.Random(seed)
    ops, weights_ = list(WEIGHTS), list((WEIGHTS | (weights or {})).values())
    schedule: list[Step] = []
    for _ in range(steps):
        op = rng.choices(ops, weights_)[0]
        slot = rng.randrange(SLOTS)
        args: dict[str, Any] = {}
        if op == "create":
            args = {
                "account": rng.choices(range(ACCOUNTS + 1), [45] * ACCOUNTS + [10])[0],
                "plans": rng.randrange(len(PLAN_CHOICES)),
                "interval": rng.choice([4, 6, 12, 24]),
                "orphan": rng.random() < 0.2,
                "ownSecret": rng.random() < 0.3,
            }
        elif op == "patch":
            args = {"interval": rng.choice([4, 6, 12, 24]), "plans": rng.randrange(len(PLAN_CHOICES))}
        elif op == "aws_faults":
            drawn = rng.choice(AWS_FAULTY)
            args = {
                "operation": EKS_FAULTY
                if slot % 2
                else ORGANIZATION_FAULTY[drawn]
                if slot == 2
                else STACK_FAULTY.get(drawn, drawn),
                "status": rng.choice([400, 500, 503]),
                "count": rng.randint(1, 6),
                **_fault_mode(rng),
            }
        elif op == "arm_faults":
            args = {"status": rng.choice([429, 500, 503]), "count": rng.randint(1, 6), **_fault_mode(rng)}
        elif op == "foreign_stack":
            args = {"account": rng.randrange(ACCOUNTS)}
        elif op == "delete_role":
            args = {"role": rng.randrange(100)}  # which of the stack's roles, modulo their number
        elif op in ("sentinel", "narrow_policy", "widen_policy"):
            args = {"account": rng.randrange(ACCOUNTS)}
        elif op == "wait":
            args = {"seconds": round(rng.uniform(0.2, 3.0), 1)}
        elif op == "create_organization":
            own = random.Random(rng.random())
            args = {
                "plans": own.randrange(len(PLAN_CHOICES)),
                "interval": own.choice([4, 6, 12, 24]),
                "orphan": own.random() < 0.2,
                "exclude": own.random() < 0.3,  # the first member account is excluded (excludedAccountIds)
            }
        elif op in TAIL_OPS:
            drawn = rng.random()
            args = (
                {"account": int(drawn * ACCOUNTS)}
                if op == "second_policy"
                else {"seconds": round(1 + drawn * 7, 1)}
                if op == "slow_stacks"
                else {}
            )
        schedule.append(Step(op, slot, args))
    return schedule


def _fault_mode(rng: random.Random) -> dict[str, Any]:
    """How a fault shows: an error answer (the status drawn), a slow answer, or a connection dropped unanswered."""
    mode = rng.choice(["error", "error", "latency", "drop", "drop_after"])
    return {"mode": mode, **({"latency": round(rng.uniform(1.0, 8.0), 1)} if mode == "latency" else {})}


def describe(schedule: list[Step]) -> str:
    return "\n".join(f"{i + 1:3}. {step.describe()}" for i, step in enumerate(schedule))


def to_json(schedule: list[Step]) -> list[dict[str, Any]]:
    return [asdict(step) for step in schedule]


def from_json(data: list[dict[str, Any]]) -> list[Step]:
    return [Step(d["op"], int(d.get("slot", 0)), dict(d.get("args") or {})) for d in data]
