"""redis-py's own commands against sessiond, in RESP2 and RESP3: the calls session
backends make, with the Python types redis-py turns each reply into."""

import time

import pytest
import redis


def test_handshake_and_connection_commands(r, protocol):
    assert r.ping() is True
    # The protocol actually in use: redis-py 8 defaults to RESP3 and sends HELLO 3 first,
    # and would fail every request if that failed.
    expected = protocol or (3 if int(redis.__version__.split(".")[0]) >= 8 else 2)
    conn = r.connection_pool.get_connection()
    try:
        assert int(conn.protocol) == expected
        if expected == 3:
            assert conn.handshake_metadata[b"proto"] == 3
    finally:
        r.connection_pool.release(conn)
    assert r.echo("hi") == b"hi"
    assert r.client_setname("web-1") is True
    assert r.client_getname() in (b"web-1", "web-1")
    assert isinstance(r.client_id(), int)
    assert r.dbsize() >= 0
    info = r.info()
    assert "redis_version" in info and "connected_clients" in info
    assert "db0" in r.info("keyspace") or r.dbsize() == 0
    with pytest.raises(redis.ResponseError, match="unknown command"):
        r.execute_command("LPUSH", "list", "x")


def test_strings(r):
    assert r.set("s:1", "v") is True
    assert r.get("s:1") == b"v"
    assert r.set("s:1", "w", nx=True) is None
    assert r.set("s:1", "w", xx=True, get=True) == b"v"
    assert r.set("s:1", "x", ex=100) is True
    assert r.ttl("s:1") == 100
    assert r.set("s:1", "y", px=50_000) is True
    assert 49_000 <= r.pttl("s:1") <= 50_000
    assert r.set("s:1", "z", keepttl=True) is True
    assert r.pttl("s:1") <= 50_000
    assert r.setex("s:2", 60, "a") is True
    assert r.psetex("s:3", 60_000, "b") is True
    assert r.mget("s:1", "nope", "s:2", "s:3") == [b"z", None, b"a", b"b"]
    assert r.getex("s:2", ex=500) == b"a"
    assert r.ttl("s:2") == 500
    assert r.getdel("s:3") == b"b"
    assert r.get("s:3") is None


def test_keys_and_expiry(r):
    r.set("k:1", "v")
    r.set("k:2", "v")
    assert r.exists("k:1", "k:2", "k:none") == 2
    assert r.expire("k:1", 1000) is True
    assert r.expire("k:none", 10) is False
    assert r.pexpire("k:1", 20_000) is True
    assert r.expireat("k:1", int(time.time()) + 300) is True
    assert 290 <= r.ttl("k:1") <= 300
    # Sessions never become permanent.
    assert r.persist("k:1") is False
    assert r.ttl("k:1") > 0
    assert r.ttl("k:none") == -2
    assert r.delete("k:1", "k:2", "k:none") == 2
    assert r.unlink("k:1") == 0


def test_scan(r):
    names = {f"scan:{i}" for i in range(250)}
    for name in names:
        r.set(name, "v", ex=600)
    found = {k.decode() for k in r.scan_iter(match="scan:*", count=40)}
    assert found == names
    cursor, keys = r.scan(0, match="scan:*", count=10)
    assert isinstance(cursor, int) and isinstance(keys, list)


def test_pipeline(r):
    with r.pipeline(transaction=False) as p:
        for i in range(100):
            p.set(f"p:{i}", i, ex=60)
        for i in range(100):
            p.get(f"p:{i}")
        replies = p.execute()
    assert replies[:100] == [True] * 100
    assert replies[100:] == [str(i).encode() for i in range(100)]


def test_large_value_round_trips(r):
    value = bytes(range(256)) * 1024
    r.set("big", value, ex=60)
    assert r.get("big") == value


def test_too_large_value_is_a_clean_error(r):
    with pytest.raises(redis.ResponseError, match="too large"):
        r.set("huge", b"x" * (2 * 1024 * 1024))
    # The connection is still usable.
    assert r.ping() is True
