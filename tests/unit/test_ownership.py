"""The owner mark: the same object (namespace, name and uid) in the same installation owns; anything else does not."""

from defender_operator.aws.oidc import audience_code, user_tag
from defender_operator.ownership import OWNER_TAG, Owner, describe_owner


def test_owner_is_instance_namespace_and_name_and_fits_a_tag_value() -> None:
    mine = Owner("cluster-a", "security", "payments", "uid-1")
    assert mine.owns(mine.tags())
    namesake = Owner("cluster-a", "security", "payments", "uid-2").tags()  # re-created after Orphan
    assert not mine.owns(namesake) and mine.namesake(namesake)
    assert "earlier AWSConnector" in describe_owner(namesake, mine)
    assert not mine.owns(Owner("cluster-b", "security", "payments", "uid-1").tags())  # another cluster
    assert not mine.owns(Owner("cluster-a", "team-b", "payments", "uid-1").tags())
    assert not mine.owns({})  # hand-made
    long = Owner("cluster-a", "n" * 63, "x" * 253, "uid")
    assert len(long.ref) <= 256 and long.ref != Owner("cluster-a", "n" * 63, "x" * 252 + "y", "uid").ref
    assert all("/" not in key for key in mine.tags())  # Azure refuses "/" in tag names


def test_messages_name_the_owner() -> None:
    assert "cluster-b/ns/a" in describe_owner({OWNER_TAG: "cluster-b/ns/a"})
    assert describe_owner({"team": "payments"}) == "it was not made by defender-operator"


def test_provider_bookkeeping_fits_in_tags() -> None:
    audiences = [f"api://AzureSecurityCenter.MultiCloud.Plan{i}-{'x' * 30}" for i in range(6)]
    assert len(" ".join(audience_code(a) for a in audiences)) <= 256
    assert len(user_tag(Owner("c", "n", "a", "u"))) <= 128
    assert user_tag(Owner("c", "n", "a", "u")) != user_tag(Owner("c", "n", "b", "u"))
