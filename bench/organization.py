"""Benchmark: an organization at the size of real ones, through its whole life (issue 12).

Runs the scenario of tests/support/organization_scenario.py (onboard, exclude 10, move 20 out, 5 fail, 1 joins,
delete; status and member accounts checked at each step) on its own sandbox, and prints, per step, the seconds to
the wanted status and the AWS calls the operator made (counted by its proxy), as JSON. The integration tests run
the same scenario at 300 accounts
(tests/integration/test_organizations.py::test_an_organization_of_300_accounts_in_20_ous). Results go into
docs/performance.md.

    .venv/bin/python -m bench.organization [--accounts 300] [--ous 20]
"""

import argparse
import json

from tests.conftest import TEST_POLICY
from tests.support.kube import apply, kubectl
from tests.support.operator import start_operator
from tests.support.organization_scenario import MINIMUM_ACCOUNTS, run

from bench.sandbox import bench_sandbox, operator_state

NAMESPACE = "bench-org"
MANAGEMENT = "600000000000"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=300)
    parser.add_argument("--ous", type=int, default=20)
    args = parser.parse_args()
    if args.accounts < MINIMUM_ACCOUNTS:
        parser.error(
            f"--accounts: at least {MINIMUM_ACCOUNTS} (10 excluded, 20 moved, 5 failing, and one that stays)"
        )
    with bench_sandbox() as box:
        kubeconfig = box.control_plane.kubeconfig
        operator = start_operator(box, operator_state(box, "bench-org-"))
        kubectl(kubeconfig, "create", "namespace", NAMESPACE, check=True)
        apply(kubeconfig, TEST_POLICY)
        results = run(box, operator, kubeconfig, NAMESPACE, MANAGEMENT, args.accounts, args.ous)
        print(json.dumps({"accounts": args.accounts, "ous": args.ous, "steps": results}, indent=2))


if __name__ == "__main__":
    main()
