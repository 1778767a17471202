"""Shrinking: a failing schedule reduced to one that still fails with fewer steps (delta debugging: drop chunks of
halving size, keep what still fails), so a campaign's find becomes a short regression case."""

from collections.abc import Callable

from .schedule import Step


def shrink(steps: list[Step], fails: Callable[[list[Step]], bool], budget: int = 24) -> list[Step]:
    """The smallest schedule found, within ``budget`` runs, that still fails (``fails`` runs it)."""
    current, chunk, runs = list(steps), max(1, len(steps) // 2), 0
    while chunk >= 1 and runs < budget:
        reduced = False
        start = 0
        while start < len(current) and runs < budget:
            candidate = current[:start] + current[start + chunk :]
            runs += 1
            if candidate and fails(candidate):
                current, reduced = candidate, True
            else:
                start += chunk
        if not reduced:
            chunk //= 2
    return current
