"""Starting the cloud emulators (and proxies in front of them) as recorded background processes."""

import json
import ssl
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import certifi

from . import processes
from .pki import CertificateAuthority
from .readiness import wait_ready

# The account the sandbox's AWS credentials belong to: the examples' single account. Other accounts are reached
# by assuming a role in them (spec.aws.credentials.roleArn), which moto honours across accounts.
SANDBOX_ACCOUNT = "111122223333"
# The AMIs moto's EC2 knows in every account and region: one Amazon Linux image, not moto's default few hundred. moto
# copies its AMIs into each account's EC2 the first time that account is used (55 ms of the emulator's CPU, which
# shares this machine with the operator); the operator's prerequisite check reads EC2 in every account it onboards.
# A cost of the emulator's own, not one AWS makes a client pay.
AMIS = Path(__file__).parent / "aws" / "amis.json"


def start_aws(state: Path, async_stack_seconds: float = 0.0, name: str = "aws-emulator") -> str:
    port = processes.free_port()
    record = processes.start(
        state,
        name,
        [
            sys.executable,
            "-m",
            "defender_operator.sandbox.aws.server",
            "--port",
            str(port),
            "--async-stack-seconds",
            str(async_stack_seconds),
            "--account",
            SANDBOX_ACCOUNT,
        ],
        env={"MOTO_AMIS_PATH": str(AMIS)},
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(record, f"{url}/_sandbox/config", "AWS emulator")
    return url


def arm_certificates(state: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for the ARM emulator (and a TLS proxy in front of it)."""
    pki = state / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_file = pki / "arm-ca.crt"
    if not ca_file.exists():
        ca = CertificateAuthority("sandbox-arm-ca")
        ca.serving_cert(["127.0.0.1", "localhost"]).write(pki, "arm")
        ca_file.write_bytes(ca.cert_pem)
        trust_bundle(ca_file).write_bytes(Path(certifi.where()).read_bytes() + b"\n" + ca.cert_pem)
    return ca_file, pki / "arm.crt", pki / "arm.key"


def trust_bundle(ca_file: Path) -> Path:
    """certifi's public roots (as requests uses) plus the sandbox's CA: for clients that read one bundle for all."""
    return ca_file.with_name("trust-bundle.pem")


def start_arm(state: Path, page_size: int = 50, name: str = "arm-emulator") -> tuple[str, Path]:
    ca_file, cert, key = arm_certificates(state)
    port = processes.free_port()
    record = processes.start(
        state,
        name,
        [
            sys.executable,
            "-m",
            "defender_operator.sandbox.arm.server",
            "--port",
            str(port),
            "--cert",
            str(cert),
            "--key",
            str(key),
            "--page-size",
            str(page_size),
        ],
    )
    url = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca_file))
    wait_ready(record, f"{url}/_sandbox/requests", "ARM emulator", context)
    return url, ca_file


def start_proxy(state: Path, name: str, upstream: str, service: str, pki_state: Path | None = None) -> str:
    """A fault-injecting proxy in front of an emulator (TLS in front of the ARM emulator, with the certificate of
    the sandbox in ``pki_state``, so clients that trust the emulator trust the proxy)."""
    port = processes.free_port()
    argv = [
        sys.executable,
        "-m",
        "defender_operator.sandbox.proxy",
        "--port",
        str(port),
        "--upstream",
        upstream,
        "--service",
        service,
    ]
    context = None
    scheme = "http"
    if upstream.startswith("https"):
        ca_file, cert, key = arm_certificates(pki_state or state)
        argv += ["--cert", str(cert), "--key", str(key), "--upstream-ca", str(ca_file)]
        context = ssl.create_default_context(cafile=str(ca_file))
        scheme = "https"
    record = processes.start(state, name, argv)
    url = f"{scheme}://127.0.0.1:{port}"
    wait_ready(record, f"{url}/_proxy/stats", f"proxy {name}", context)
    return url


def start_emulators(state: Path, async_stack_seconds: float = 0.0) -> dict[str, str]:
    """Start both emulators at once; the fields of ``Sandbox`` that say how to reach them."""
    with ThreadPoolExecutor(2) as pool:  # each waits for its own readiness
        aws = pool.submit(start_aws, state, async_stack_seconds)
        arm = pool.submit(start_arm, state)
        arm_url, ca_file = arm.result()
        return {"aws_endpoint": aws.result(), "arm_endpoint": arm_url, "arm_ca_file": str(ca_file)}


def control(
    url: str, path: str, payload: Any = None, method: str = "POST", ca_file: str | None = None
) -> Any:
    """Call an emulator's or proxy's control endpoint."""
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(
        url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read() or b"null")
