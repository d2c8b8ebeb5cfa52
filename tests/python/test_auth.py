"""Authentication and roles as redis-py sees them (`username=`, `password=`), when the server
requires authentication (tests/tests/resp_clients.rs sets SESSIOND_RESP_APP_USER and the
others). Skipped against a server without users."""

import pytest
import redis

from conftest import connection_kwargs, credentials, resp_addr

pytestmark = pytest.mark.skipif(
    not credentials("app"), reason="the server has no users (SESSIOND_RESP_APP_USER unset)"
)


def client(protocol, **overrides):
    host, port = resp_addr()
    kwargs = connection_kwargs("app")
    kwargs.update(overrides)
    if protocol is not None:
        kwargs["protocol"] = protocol
    return redis.Redis(host=host, port=port, **kwargs)


def test_the_app_user_reads_and_writes_sessions_by_key(protocol):
    r = client(protocol)
    try:
        assert r.set("auth:s1", "v", ex=60)
        assert r.get("auth:s1") == b"v"
        assert r.ttl("auth:s1") > 0
        assert r.delete("auth:s1") == 1
    finally:
        r.close()


def test_the_app_user_cannot_list_keys(protocol):
    r = client(protocol)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError, match="has no permissions"):
            r.scan(0)
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.dbsize()
    finally:
        r.close()


def test_a_wrong_password_is_refused(protocol):
    r = client(protocol, password="not-the-password")
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            r.ping()
    finally:
        r.close()


def test_no_credentials_get_noauth(protocol):
    host, port = resp_addr()
    kwargs = {k: v for k, v in connection_kwargs("app").items() if k not in ("username", "password")}
    if protocol is not None and protocol != 3:
        # RESP3 clients send HELLO 3 first, which answers NOAUTH itself.
        kwargs["protocol"] = protocol
    r = redis.Redis(host=host, port=port, **kwargs)
    try:
        with pytest.raises(redis.exceptions.AuthenticationError):
            r.get("auth:s1")
    finally:
        r.close()
