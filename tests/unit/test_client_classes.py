"""Clients of different credentials share their botocore class and service model, and nothing they sign with."""

from typing import Any

import botocore.session
from botocore.awsrequest import AWSResponse

from defender_operator.aws.client_classes import share_client_classes
from defender_operator.credentials import CredentialFactory, _Keys
from defender_operator.settings import Settings

IDENTITY = (
    b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><GetCallerIdentityResult>'
    b"<Arn>arn:aws:iam::123456789012:user/someone</Arn><UserId>AIDA</UserId><Account>123456789012</Account>"
    b"</GetCallerIdentityResult><ResponseMetadata><RequestId>1</RequestId></ResponseMetadata>"
    b"</GetCallerIdentityResponse>"
)


class _Body:
    def stream(self, **_: Any) -> Any:
        yield IDENTITY


def _signed_by(client: Any) -> str:
    """The access key in the Authorization header of the request the client sends (answered here, not sent)."""
    seen: list[str] = []

    def answer(request: Any, **_: Any) -> AWSResponse:
        seen.append(request.headers["Authorization"].decode())
        return AWSResponse(request.url, 200, {}, _Body())

    client.meta.events.register("before-send", answer)
    client.get_caller_identity()
    (authorization,) = seen
    return authorization.split("Credential=", 1)[1].split("/", 1)[0]


def test_clients_of_different_credentials_share_a_class_and_a_model_and_sign_with_their_own_keys() -> None:
    factory = CredentialFactory(Settings(aws_endpoint_url="http://127.0.0.1:9"), lambda ns, name: {})
    tenants = [_Keys(f"AKIATENANT{i}", f"secret{i}", f"token{i}") for i in range(3)]
    clients = [factory._client(keys, "sts", "us-east-1") for keys in tenants]
    classes, models = {type(c) for c in clients}, {id(c.meta.service_model) for c in clients}
    assert len(classes) == 1 and len(models) == 1  # built once: the model's operation models too
    signers, emitters = {id(c._request_signer) for c in clients}, {id(c.meta.events) for c in clients}
    assert len(signers) == 3 and len(emitters) == 3  # what a request is signed and sent with stays per client
    assert type(factory._client(tenants[0], "iam", "us-east-1")) is not type(clients[0])  # per service
    for keys, client in reversed(list(zip(tenants, clients, strict=True))):
        assert _signed_by(client) == keys.access_key_id


def test_classes_and_models_are_per_session() -> None:
    """A class carries its session's ``creating-client-class`` additions and a model its loader's data, so another
    session gets its own."""
    assert share_client_classes() and share_client_classes()  # idempotent
    sessions = [botocore.session.get_session() for _ in range(2)]
    sessions[1].register(
        "creating-client-class.sts", lambda class_attributes, **_: class_attributes.update(extra=1)
    )
    made = [
        s.create_client("sts", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        for s in sessions
    ]
    assert type(made[0]) is not type(made[1])
    assert made[0].meta.service_model is not made[1].meta.service_model
    assert not hasattr(made[0], "extra") and made[1].extra == 1
    again = sessions[0].create_client(
        "sts", region_name="us-east-1", aws_access_key_id="c", aws_secret_access_key="d"
    )
    assert type(again) is type(made[0]) and again.meta.service_model is made[0].meta.service_model
