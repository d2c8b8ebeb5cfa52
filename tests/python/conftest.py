"""Fixtures for the real-client tests.

These tests are run by tests/tests/resp_clients.rs, which starts a real sessiond with a RESP
listener and passes its address in SESSIOND_RESP_ADDR (host:port) and its native address
in SESSIOND_ADDR. Nothing here stands in for the server.

tests/tests/tls.rs runs the same tests over TLS: it points SESSIOND_RESP_ADDR at the RESP TLS
listener and sets SESSIOND_RESP_TLS_CA to the CA file, and every client connects with
redis-py's `ssl=True`, verifying the server's certificate against that CA.
"""

import os

import pytest
import redis


def resp_addr():
    addr = os.environ.get("SESSIOND_RESP_ADDR")
    if not addr:
        pytest.fail("SESSIOND_RESP_ADDR is not set: run these tests through `cargo test`")
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def connection_kwargs():
    """What every client needs beyond host and port: TLS when SESSIOND_RESP_TLS_CA is set."""
    ca = os.environ.get("SESSIOND_RESP_TLS_CA")
    if not ca:
        return {}
    return {"ssl": True, "ssl_ca_certs": ca, "ssl_cert_reqs": "required"}


@pytest.fixture(params=["default", 2, 3])
def protocol(request):
    """The RESP version the client asks for: the library's default (RESP2 for redis-py 5,
    RESP3 for redis-py 8), then each one explicitly."""
    return None if request.param == "default" else request.param


@pytest.fixture
def r(protocol):
    host, port = resp_addr()
    kwargs = connection_kwargs()
    if protocol is not None:
        kwargs["protocol"] = protocol
    client = redis.Redis(host=host, port=port, **kwargs)
    yield client
    client.close()
