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

# test_twemproxy.py needs the three nodes and the proxy that tests/tests/twemproxy.rs starts
# (and names in SESSIOND_TWEMPROXY_ADDR); the runs against a single sessiond
# (resp_clients.rs, tls.rs) collect this whole directory and leave it out.
collect_ignore = [] if os.environ.get("SESSIOND_TWEMPROXY_ADDR") else ["test_twemproxy.py"]


def resp_addr():
    addr = os.environ.get("SESSIOND_RESP_ADDR")
    if not addr:
        pytest.fail("SESSIOND_RESP_ADDR is not set: run these tests through `cargo test`")
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def credentials(role="app"):
    """The user and password of `role` (`app` or `admin`) when the server requires
    authentication: SESSIOND_RESP_APP_USER / SESSIOND_RESP_APP_PASSWORD, and the same with
    ADMIN. Empty when they are not set (a server without users)."""
    user = os.environ.get(f"SESSIOND_RESP_{role.upper()}_USER")
    if not user:
        return {}
    return {"username": user, "password": os.environ[f"SESSIOND_RESP_{role.upper()}_PASSWORD"]}


def connection_kwargs(role="app"):
    """What every client needs beyond host and port: TLS when SESSIOND_RESP_TLS_CA is set,
    and the credentials of `role` when the server requires authentication. The application
    (Flask-Session) connects as `app`, which may not list keys; the tests that inspect the
    keyspace connect as `admin`."""
    kwargs = credentials(role)
    ca = os.environ.get("SESSIOND_RESP_TLS_CA")
    if ca:
        kwargs.update({"ssl": True, "ssl_ca_certs": ca, "ssl_cert_reqs": "required"})
    return kwargs


@pytest.fixture(params=["default", 2, 3])
def protocol(request):
    """The RESP version the client asks for: the library's default (RESP2 for redis-py 5,
    RESP3 for redis-py 8), then each one explicitly."""
    return None if request.param == "default" else request.param


@pytest.fixture
def r(protocol):
    host, port = resp_addr()
    kwargs = connection_kwargs("admin")
    if protocol is not None:
        kwargs["protocol"] = protocol
    client = redis.Redis(host=host, port=port, **kwargs)
    yield client
    client.close()
