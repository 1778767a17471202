"""Reading AWSConnector manifests (YAML, possibly several documents) into validated specs.

Problems come back as one line each, naming the field path the way ``kubectl`` does (``spec.aws.accountId``) and the
rule that failed, so a person can fix the manifest without reading a traceback.
"""

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from .names import API_VERSION, KIND
from .schema import NEW
from .spec import AWSConnectorSpec

_MAX_CHOICES_SHOWN = 6


@dataclass(frozen=True)
class Manifest:
    """One AWSConnector document: its identity, and either a valid spec or the problems found."""

    name: str
    namespace: str
    spec: AWSConnectorSpec | None
    problems: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``namespace/name``: how the output tells objects of the same name in two namespaces apart."""
        return f"{self.namespace}/{self.name}"

    @property
    def connector_name(self) -> str:
        assert self.spec is not None
        return self.spec.azure.connector_name or self.name


def _path(loc: tuple[int | str, ...], prefix: str) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{to_camel(part) if '_' in part else part}"
    return out


def _rule(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx", {})
    got = error.get("input")
    if kind == "string_pattern_mismatch":
        return f"must match {ctx['pattern']} (got {got!r})"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        choices = [c.strip().strip("'") for c in expected.replace(" or ", ", ").split(",")]
        if len(choices) > _MAX_CHOICES_SHOWN:
            return f"unsupported value {got!r}: must be one of {len(choices)} allowed values (see kubectl explain)"
        return f"unsupported value {got!r}: must be one of {', '.join(choices)}"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required value"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return str(error["msg"]) + (f" (got {got!r})" if not isinstance(got, dict | list) else "")


def format_validation_error(exc: ValidationError, prefix: str = "spec") -> list[str]:
    """One ``path: rule`` line per problem."""
    return [f"{_path(e['loc'], prefix)}: {_rule(e)}" for e in exc.errors()]


def parse_document(doc: Any, index: int) -> Manifest:
    if not isinstance(doc, dict):
        return Manifest(name=f"document {index}", namespace="", spec=None, problems=["not a YAML mapping"])
    meta = doc.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "default")
    problems = []
    if doc.get("apiVersion") != API_VERSION:
        problems.append(f"apiVersion: must be {API_VERSION} (got {doc.get('apiVersion')!r})")
    if doc.get("kind") != KIND:
        problems.append(f"kind: must be {KIND} (got {doc.get('kind')!r})")
    if not name:
        problems.append("metadata.name: required value")
    spec = None
    try:
        spec = AWSConnectorSpec.model_validate(doc.get("spec"), context=NEW)
    except ValidationError as exc:
        problems.extend(format_validation_error(exc))
    return Manifest(
        name=name or f"document {index}", namespace=namespace, spec=spec, problems=problems, raw=doc
    )


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: what is wrong and where (PyYAML's own text spans several lines of parser internals)."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"not valid YAML: {what}{where}"


def _items(doc: Any) -> list[Any]:
    """A ``kind: List`` (what ``kubectl get -o yaml`` writes) stands for its items."""
    if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
        return list(doc["items"])
    return [doc]


def load_manifests(text: str) -> list[Manifest]:
    """Every non-empty document of a (multi-document) YAML or JSON stream, lists unpacked."""
    try:
        docs = [item for d in yaml.safe_load_all(text) if d is not None for item in _items(d)]
    except yaml.YAMLError as exc:
        return [Manifest(name="input", namespace="", spec=None, problems=[_yaml_problem(exc)])]
    return [parse_document(doc, i + 1) for i, doc in enumerate(docs)]
