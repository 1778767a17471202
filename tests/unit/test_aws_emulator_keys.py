"""The AWS emulator finds the account of a request's access key in an index (sandbox/aws/iam_fixes.py), as AWS knows
it at once; moto looked through every partition of every account on every request, so the emulator slowed as
onboardings added accounts, and the benchmarks' figures depended on their order."""

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.iam import models as iam_models
from moto.iam.models import iam_backends

from defender_operator.sandbox.aws import iam_fixes

ACCOUNTS = [str(710000000000 + n) for n in range(40)]


def test_each_key_is_its_own_accounts_and_a_lookup_walks_no_other_account() -> None:
    iam_fixes.apply()
    keys = {
        account: iam_backends[account]["aws"].create_temp_access_key().access_key_id for account in ACCOUNTS
    }
    for account, key in keys.items():
        assert iam_models.get_account_id_from(key) == account
    assert iam_models.get_account_id_from("AKIAUNKNOWNKEY000000") == DEFAULT_ACCOUNT_ID
    # moto's own lookup made every partition's backend of every account on the way (aws-cn, aws-us-gov, ...).
    assert all(list(iam_backends[account].keys()) == ["aws"] for account in ACCOUNTS)


def test_a_deleted_key_and_a_reset_accounts_keys_are_unknown() -> None:
    iam_fixes.apply()
    first, second = ACCOUNTS[:2]
    gone = iam_backends[first]["aws"].create_temp_access_key().access_key_id
    kept = iam_backends[second]["aws"].create_temp_access_key().access_key_id
    iam_backends[first]["aws"].delete_access_key_by_name(gone)
    assert iam_models.get_account_id_from(gone) == DEFAULT_ACCOUNT_ID
    assert iam_models.get_account_id_from(kept) == second
    iam_backends[second]["aws"].reset()
    assert iam_models.get_account_id_from(kept) == DEFAULT_ACCOUNT_ID
