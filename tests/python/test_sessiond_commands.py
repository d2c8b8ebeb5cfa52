"""sessiond's own RESP commands (SESSIOND.SET, .SESSIONS, .ENDALL, .ROTATE) through redis-py's
`execute_command`, in RESP2 and RESP3: what a Python app calls to bind a session to its user,
list the user's devices, log out everywhere and rotate the session id at login. Plain Redis
commands keep their behaviour on the same keys."""

import time
import uuid

import pytest
import redis


def fresh(prefix):
    """A key or owner no other test uses."""
    return f"{prefix}:{uuid.uuid4().hex}"


def as_dict(reply):
    """A map reply as a dict of str keys: RESP3 gives a dict, RESP2 a flat list."""
    if isinstance(reply, dict):
        items = reply.items()
    else:
        items = zip(reply[0::2], reply[1::2])
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in items}


def sessions(r, owner, *args):
    reply = as_dict(r.execute_command("SESSIOND.SESSIONS", owner, *args))
    return reply["total"], [as_dict(s) for s in reply["sessions"]]


def test_login_lists_and_logout_everywhere(r):
    user = fresh("user")
    keys = [fresh("s") for _ in range(3)]
    for key in keys:
        version, ended = r.execute_command(
            "SESSIOND.SET", key, '{"u":1}', "NX", "PX", 60000, "OWNER", user, "LIFETIME", 3600000
        )
        assert version > 0 and ended == 0
    # Plain commands see the sessions as ordinary keys.
    assert r.get(keys[0]) == b'{"u":1}'
    assert 0 < r.pttl(keys[0]) <= 60000
    total, listed = sessions(r, user)
    assert total == 3
    assert sorted(s["key"] for s in listed) == sorted(k.encode() for k in keys)
    now_ms = time.time() * 1000
    for s in listed:
        assert 0 < s["ttl_ms"] <= 60000
        assert abs(s["created_ms"] - now_ms) < 60000
        assert s["deadline_ms"] - s["created_ms"] == pytest.approx(3600000, abs=1000)
    # COUNT bounds the listing; the total still counts them all.
    total, listed = sessions(r, user, "COUNT", 1)
    assert total == 3 and len(listed) == 1
    # Log out everywhere but this device.
    assert r.execute_command("SESSIOND.ENDALL", user, "EXCEPT", keys[0]) == 2
    assert r.get(keys[1]) is None and r.get(keys[2]) is None
    assert r.get(keys[0]) == b'{"u":1}'
    assert r.execute_command("SESSIOND.ENDALL", user) == 1
    assert sessions(r, user) == (0, [])


def test_owner_limit_refuses_or_ends_the_least_recently_used(r):
    user = fresh("user")
    first, second, third = (fresh("s") for _ in range(3))
    r.execute_command("SESSIOND.SET", first, "a", "OWNER", user, "LIMIT", 2)
    r.execute_command("SESSIOND.SET", second, "b", "OWNER", user, "LIMIT", 2, "REFUSE")
    with pytest.raises(redis.ResponseError, match="OWNERLIMIT"):
        r.execute_command("SESSIOND.SET", third, "c", "OWNER", user, "LIMIT", 2)
    assert r.get(third) is None
    # Touch the first, so the second is the least recently used.
    time.sleep(0.01)
    r.execute_command("GETEX", first, "PX", 60000)
    version, ended = r.execute_command(
        "SESSIOND.SET", third, "c", "OWNER", user, "LIMIT", 2, "ENDLRU"
    )
    assert ended == 1
    assert r.get(second) is None
    assert sorted(s["key"] for s in sessions(r, user)[1]) == sorted([first.encode(), third.encode()])


def test_rotate_at_login(r):
    anonymous, new = fresh("s"), fresh("s")
    user = fresh("user")
    version, _ = r.execute_command("SESSIOND.SET", anonymous, "cart", "PX", 60000)
    # A stale version does not rotate.
    with pytest.raises(redis.ResponseError, match="VERSIONMISMATCH"):
        r.execute_command("SESSIOND.ROTATE", anonymous, new, "IFVERSION", version + 1000)
    new_version, ended = r.execute_command(
        "SESSIOND.ROTATE", anonymous, new, "IFVERSION", version, "OWNER", user, "LIMIT", 3, "ENDLRU"
    )
    assert new_version > version and ended == 0
    # The old id is gone, the new one has the data and the owner.
    assert r.get(anonymous) is None
    assert r.get(new) == b"cart"
    assert [s["key"] for s in sessions(r, user)[1]] == [new.encode()]
    # The old id cannot be rotated again, and a taken new key is refused.
    assert r.execute_command("SESSIOND.ROTATE", anonymous, fresh("s")) is None
    other = fresh("s")
    r.set(other, "x")
    with pytest.raises(redis.ResponseError, match="BUSYKEY"):
        r.execute_command("SESSIOND.ROTATE", new, other)


def test_bad_arguments_are_errors(r):
    with pytest.raises(redis.ResponseError, match="syntax error"):
        r.execute_command("SESSIOND.SET", fresh("s"), "v", "BOGUS")
    with pytest.raises(redis.ResponseError, match="LIMIT needs OWNER"):
        r.execute_command("SESSIOND.SET", fresh("s"), "v", "LIMIT", 2)
    with pytest.raises(redis.ResponseError, match="owner must be 1 to 256 bytes"):
        r.execute_command("SESSIOND.SESSIONS", "o" * 257)
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        r.execute_command("SESSIOND.ENDALL")
    # NX on an existing key: null, like SET NX.
    key = fresh("s")
    r.set(key, "v")
    assert r.execute_command("SESSIOND.SET", key, "w", "NX", "OWNER", fresh("user")) is None
