"""Kopf's own indexing, fed by hand: index handlers registered on a registry of their own, and watch events given to
Kopf's ``index_resource`` as its watcher gives them, so what the indexes hold is decided by Kopf's rules (what a
failing handler leaves, what a deletion drops), not by a copy of them. Kopf's internals: pinned by the project's
``kopf`` requirement."""

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf
from kopf._cogs.structs import bodies, references
from kopf._core.engines import indexing
from kopf._core.intents import registries

from defender_operator.api.names import GROUP, PLURAL, VERSION

RESOURCE = references.Resource(group=GROUP, version=VERSION, plural=PLURAL, namespaced=True)


class Indexing:
    """The AWSConnectors' indexes of the given handlers (id -> function), as Kopf keeps them."""

    def __init__(self, handlers: Mapping[str, Callable[..., Any]]) -> None:
        self.registry = registries.OperatorRegistry()
        for id, fn in handlers.items():
            kopf.index(GROUP, VERSION, PLURAL, registry=self.registry, id=id)(fn)
        self.indexers = indexing.OperatorIndexers()
        self.indexers.ensure(self.registry._indexing.get_all_handlers())
        self.settings = kopf.OperatorSettings()
        self.memories: dict[str, indexing.IndexingMemory] = {}
        self.logger = logging.getLogger("kopf.test-indexing")

    async def event(self, kind: str, body: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) of ``body``, indexed as Kopf's worker indexes it."""
        uid = body["metadata"]["uid"]
        await indexing.index_resource(
            indexers=self.indexers,
            registry=self.registry,
            settings=self.settings,
            resource=RESOURCE,
            raw_event={"type": kind, "object": body},  # type: ignore[typeddict-item]
            memory=self.memories.setdefault(uid, indexing.IndexingMemory()),
            logger=self.logger,
            memo=kopf.Memo(),
            body=bodies.Body(body),  # type: ignore[arg-type]
        )

    def see(self, kind: str, body: dict[str, Any]) -> None:
        asyncio.run(self.event(kind, body))

    def indexes(self) -> dict[str, Any]:
        """The indexes as Kopf passes them to handlers: id -> index."""
        return {id: indexer.index for id, indexer in self.indexers.items()}
