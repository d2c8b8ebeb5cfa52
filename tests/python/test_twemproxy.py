"""Flask-Session 0.8 through twemproxy (nutcracker) in front of three sessiond nodes.

Run by tests/tests/twemproxy.rs, which starts the nodes and nutcracker with
deploy/twemproxy/nutcracker.yml and passes:
  SESSIOND_TWEMPROXY_ADDR       host:port of nutcracker
  SESSIOND_TWEMPROXY_PASSWORD   its redis_auth password (the nodes' user "default")
  SESSIOND_TWEMPROXY_NODES      host:port,... of the nodes' RESP listeners, to see where
                                each session landed (as user "admin", whose password is in
                                SESSIOND_TWEMPROXY_ADMIN_PASSWORD: "default" may not list keys)

The app is test_flask_session.py's, unchanged but for the redis.Redis(...) it is given:
twemproxy speaks RESP2 only and closes the connection on a command it does not know, so a
client must not send CLIENT SETINFO (redis-py 5 and later do on connect unless lib_name and
lib_version are None) nor HELLO (redis-py 8 does unless protocol=2). The last tests pin that
finding down, so a change in either project shows up here.
"""

import os
import warnings

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from test_flask_session import make_app

REDIS_MAJOR = int(redis.__version__.split(".")[0])
# The class itself: the app fixture replaces redis.Redis for make_app.
REDIS = redis.Redis
# For the connections that are meant to fail: at once, not after redis-py 8's three retries.
NO_RETRY = {"retry": Retry(NoBackoff(), 0)}


def proxy_addr():
    addr = os.environ.get("SESSIOND_TWEMPROXY_ADDR")
    if not addr:
        pytest.fail("SESSIOND_TWEMPROXY_ADDR is not set: run these tests through `cargo test`")
    host, port = addr.rsplit(":", 1)
    return host, int(port)


def password():
    return os.environ["SESSIOND_TWEMPROXY_PASSWORD"]


def through_proxy(**overrides):
    """The redis.Redis that works through twemproxy: the password alone (twemproxy knows
    no user names), no CLIENT SETINFO, and RESP2."""
    host, port = proxy_addr()
    kwargs = {"host": host, "port": port, "password": password(), "protocol": 2}
    kwargs.update(overrides)
    with warnings.catch_warnings():
        # redis-py 8 deprecates lib_name/lib_version in favour of driver_info, whose
        # default still sends CLIENT SETINFO; None for both is the documented way out.
        warnings.simplefilter("ignore", DeprecationWarning)
        return REDIS(lib_name=None, lib_version=None, **kwargs)


class ThroughProxy(REDIS):
    """redis.Redis(host, port) as make_app calls it, with through_proxy()'s arguments (a
    subclass: Flask-Session checks that it was given a redis.Redis)."""

    def __init__(self, host, port, **_app_kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            super().__init__(host=host, port=port, password=password(), protocol=2,
                             lib_name=None, lib_version=None)


@pytest.fixture
def nodes():
    """A direct connection to each node (not through the proxy), to see where keys are."""
    clients = []
    for addr in os.environ["SESSIOND_TWEMPROXY_NODES"].split(","):
        host, port = addr.rsplit(":", 1)
        admin = os.environ["SESSIOND_TWEMPROXY_ADMIN_PASSWORD"]
        clients.append(REDIS(host=host, port=int(port), username="admin", password=admin))
    yield clients
    for client in clients:
        client.close()


@pytest.fixture
def app(monkeypatch):
    # make_app builds the documented app around redis.Redis(host, port, **kwargs); only that
    # constructor is swapped for the one that works through the proxy.
    monkeypatch.setenv("SESSIOND_RESP_ADDR", os.environ["SESSIOND_TWEMPROXY_ADDR"])
    monkeypatch.setattr(redis, "Redis", ThroughProxy)
    app = make_app(None)
    yield app
    app.config["SESSION_REDIS"].close()


def holders(nodes, key):
    return [i for i, node in enumerate(nodes) if node.exists(key)]


def keys_of(node):
    return {k.decode() for k in node.scan_iter(match="myapp:*", count=100)}


def all_keys(nodes):
    return set().union(*(keys_of(node) for node in nodes))


def session_key(nodes, before):
    """The one session key that appeared on any node since `before`."""
    new = all_keys(nodes) - before
    assert len(new) == 1, new
    return new.pop()


def test_login_read_logout_through_the_proxy(app, nodes):
    before = all_keys(nodes)
    browser = app.test_client()
    assert browser.get("/").get_data(as_text=True) == "Session data set!"
    assert browser.get("/get").get_data(as_text=True) == "Username: Alice"
    key = session_key(nodes, before)
    # On exactly one node, with Flask-Session's expiry.
    [home] = holders(nodes, key)
    assert 0 < nodes[home].ttl(key) <= 31 * 24 * 3600
    assert app.test_client().get("/get").get_data(as_text=True) == "Username: None"

    assert browser.get("/regenerate").get_data(as_text=True) == "regenerated"
    assert holders(nodes, key) == []
    assert browser.get("/get").get_data(as_text=True) == "Username: Alice"
    assert browser.get("/logout").get_data(as_text=True) == "cleared"
    assert all_keys(nodes) == before
    assert browser.get("/get").get_data(as_text=True) == "Username: None"


def test_sessions_spread_over_every_node(app, nodes):
    before = all_keys(nodes)
    browsers = [app.test_client() for _ in range(60)]
    for browser in browsers:
        assert browser.get("/").status_code == 200
    new = all_keys(nodes) - before
    assert len(new) == 60
    per_node = [len(keys_of(node) & new) for node in nodes]
    # Each on exactly one node, and every node holds some (ketama over 3 names: expect 20
    # each; a node with none would mean the proxy is not spreading at all).
    assert sum(per_node) == 60, per_node
    assert all(n >= 5 for n in per_node), per_node
    for browser in browsers:
        assert browser.get("/get").get_data(as_text=True) == "Username: Alice"
        browser.get("/logout")
    assert all_keys(nodes) == before


def test_default_redis_py_connection_is_closed_by_the_proxy():
    # redis.Redis(host, port, password) as the seed app writes it sends CLIENT SETINFO
    # (and with redis-py 8, HELLO 3) first; twemproxy closes the connection.
    host, port = proxy_addr()
    client = REDIS(host=host, port=port, password=password(), **NO_RETRY)
    with pytest.raises(redis.ConnectionError):
        client.get("myapp:probe")
    client.close()


@pytest.mark.skipif(REDIS_MAJOR < 6, reason="RESP2 is redis-py 5's default")
def test_resp3_is_refused_even_without_client_setinfo():
    client = through_proxy(protocol=3, **NO_RETRY)
    with pytest.raises(redis.ConnectionError):
        client.get("myapp:probe")
    client.close()


def test_only_the_password_authenticates():
    assert through_proxy().ping()
    with pytest.raises(redis.AuthenticationError):
        through_proxy(password="not-the-password", **NO_RETRY).get("myapp:probe")
