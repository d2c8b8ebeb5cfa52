"""redis-py's pipelines and transactions against sessiond, as an application uses them:
pipelines with transaction=True (MULTI/EXEC) and transaction=False, errors inside a
transaction, and optimistic locking with WATCH, retried by Redis.transaction().

Every client here connects as the application would (the `app` user when the server has
users), and every test uses keys of its own, so the tests can share one server.
"""

import threading
import uuid

import pytest
import redis

from conftest import connection_kwargs, resp_addr


@pytest.fixture
def app(protocol):
    """A client that connects as the application: `app` when the server has users."""
    clients = []

    def connect():
        host, port = resp_addr()
        kwargs = connection_kwargs("app")
        if protocol is not None:
            kwargs["protocol"] = protocol
        client = redis.Redis(host=host, port=port, **kwargs)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def keys():
    """Key names no other test uses: keys("a", "b") -> ["tx:<uuid>:a", "tx:<uuid>:b"]."""
    prefix = f"tx:{uuid.uuid4().hex}:"
    return lambda *names: [prefix + name for name in names]


def test_pipeline_with_transaction(app, keys):
    r = app()
    a, b, c = keys("a", "b", "c")
    r.set(c, "old")
    with r.pipeline(transaction=True) as pipe:
        pipe.set(a, "1", ex=100).set(b, "2").get(a).mget(a, b).delete(c).ttl(a)
        assert pipe.execute() == [True, True, b"1", [b"1", b"2"], 1, 100]
    assert r.mget(a, b, c) == [b"1", b"2", None]


def test_pipeline_without_transaction(app, keys):
    r = app()
    names = keys(*(str(i) for i in range(500)))
    with r.pipeline(transaction=False) as pipe:
        for i, key in enumerate(names):
            pipe.set(key, str(i), ex=300)
        for key in names:
            pipe.get(key)
        replies = pipe.execute()
    assert replies[:500] == [True] * 500
    assert replies[500:] == [str(i).encode() for i in range(500)]
    with r.pipeline(transaction=False) as pipe:
        pipe.delete(*names).exists(*names)
        assert pipe.execute() == [500, 0]


def test_an_error_inside_exec_affects_only_its_command(app, keys):
    """As in Redis: a command that fails when EXEC runs it reports its error in its place,
    and the commands around it still run."""
    r = app()
    a, b = keys("a", "b")
    with r.pipeline(transaction=True) as pipe:
        pipe.set(a, "1").expire(a, "not-a-number").set(b, "2")
        replies = pipe.execute(raise_on_error=False)
    assert replies[0] is True and replies[2] is True
    assert isinstance(replies[1], redis.ResponseError)
    assert r.mget(a, b) == [b"1", b"2"]
    with r.pipeline(transaction=True) as pipe:
        pipe.set(a, "3").expire(a, "not-a-number")
        with pytest.raises(redis.ResponseError):
            pipe.execute()
    assert r.get(a) == b"3"


def test_a_queueing_error_discards_the_transaction(app, keys):
    """An unknown command is refused when queued, and EXEC then runs nothing
    (EXECABORT), which redis-py raises."""
    r = app()
    (a,) = keys("a")
    with r.pipeline(transaction=True) as pipe:
        pipe.set(a, "1").execute_command("NOSUCHCOMMAND", a)
        with pytest.raises(redis.ResponseError):
            pipe.execute()
    assert r.get(a) is None
    # The connection is usable afterwards.
    assert r.set(a, "2") and r.get(a) == b"2"


@pytest.mark.parametrize(
    "interfere, after",
    [
        (lambda other, key: other.set(key, "changed"), b"changed"),
        (lambda other, key: other.delete(key), None),
        (lambda other, key: other.expire(key, 0), None),
    ],
    ids=["written", "deleted", "expired"],
)
def test_watch_conflict_raises_watch_error(app, keys, interfere, after):
    """A watched key written, deleted or expired by another client aborts EXEC: redis-py
    raises WatchError, and nothing queued ran."""
    r, other = app(), app()
    (a,) = keys("a")
    r.set(a, "1")
    with r.pipeline() as pipe:
        pipe.watch(a)
        assert pipe.get(a) == b"1"  # immediate mode while watching
        interfere(other, a)
        pipe.multi()
        pipe.set(a, "2")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert r.get(a) == after


def test_watch_conflict_is_retried_by_transaction(app, keys):
    """Redis.transaction(): WATCH, read, MULTI ... EXEC, and on a conflict (a null EXEC)
    start again. Another client writes the key during the first attempt only."""
    r, other = app(), app()
    (counter,) = keys("counter")
    r.set(counter, "10")
    attempts = []

    def increment(pipe):
        value = int(pipe.get(counter))
        attempts.append(value)
        if len(attempts) == 1:
            other.set(counter, "100")
        pipe.multi()
        pipe.set(counter, value + 1, ex=600)

    assert r.transaction(increment, counter) == [True]
    assert attempts == [10, 100]
    assert r.get(counter) == b"101"
    assert 0 < r.ttl(counter) <= 600


def test_unwatch(app, keys):
    r, other = app(), app()
    (a,) = keys("a")
    with r.pipeline() as pipe:
        pipe.watch(a)
        other.set(a, "x")
        pipe.unwatch()
        pipe.multi()
        pipe.set(a, "mine")
        assert pipe.execute() == [True]
    assert r.get(a) == b"mine"


def test_concurrent_optimistic_increments_lose_nothing(app, keys):
    """Several threads increment one counter with WATCH/MULTI/EXEC: a lost update would
    leave the counter short."""
    (counter,) = keys("counter")
    app().set(counter, "0")
    threads, per_thread = 4, 25

    def increment(pipe):
        value = int(pipe.get(counter))  # immediate: the pipeline is watching
        pipe.multi()
        pipe.set(counter, value + 1)

    def work():
        r = app()
        for _ in range(per_thread):
            r.transaction(increment, counter)

    # Each thread gets its own client (and connections): redis-py pipelines are not shared.
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()
    assert app().get(counter) == str(threads * per_thread).encode()
