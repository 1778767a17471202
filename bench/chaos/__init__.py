"""A Jepsen-style campaign: seeded random schedules of user, cluster, cloud and foreign-actor operations against the
operator as its own process, with invariants judged on the clouds' and the cluster's real state afterwards
(docs/reliability.md). ``python -m bench.chaos --seed S --schedules N``."""
