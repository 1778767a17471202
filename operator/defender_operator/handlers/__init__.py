"""The Kopf layer: translates Kopf's events into calls of ``reconcile()`` and ``finalize()``; decides nothing.

One daemon per object runs the level-based loop: reconcile, write status, post events, then sleep until the requeue
time (jittered, with exponential backoff after errors) or until something changed (a new generation, the pause or
reconcile-requested annotations), whichever comes first. Deletion is an ``on.delete`` handler, so Kopf keeps the
project's finalizer until cleanup is done. An index by AWS account and subscription finds duplicates.

A pass and a cleanup of one object never overlap: both run under the object's lock, which is held until the worker
thread really ends (a cancelled coroutine does not stop its thread), and once cleanup has begun no pass starts.
Before the first write to either cloud, the pass records it (``reconcile/journal.py``: the object's OnboardingRecord,
then ``status.firstCloudWrite``); cleanup works from that record, and of an object without one it has nothing to
remove and ends at once, whatever its credentials. The grant is decided when a worker slot is free, for passes and
cleanups alike.

Modules: ``runtime`` (what the handlers share, Kopf's settings), ``startup``, ``tenancy`` (policies and namespaces),
``indexes`` (what the handlers look up about the other AWSConnectors), ``objects`` (the AWSConnectors' wake-ups and
reconcile loop) and ``cleanup`` (deletion). Importing this package registers every handler with Kopf.
"""

from . import cleanup, indexes, objects, startup, tenancy

__all__ = ["cleanup", "indexes", "objects", "startup", "tenancy"]
