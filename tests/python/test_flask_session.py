"""Flask-Session 0.8's Redis backend against sessiond, unchanged but for the address.

The app is the example from Flask-Session's documentation: SESSION_TYPE='redis',
SESSION_PERMANENT=False, SESSION_USE_SIGNER=True, SESSION_KEY_PREFIX='myapp:' and
SESSION_REDIS=redis.Redis(...). Flask's test client drives it; the sessions live in a real
sessiond.
"""

import pytest
import redis
from flask import Flask, session
from flask_session import Session

from conftest import connection_kwargs, resp_addr


def make_app(protocol):
    host, port = resp_addr()
    kwargs = connection_kwargs()
    if protocol is not None:
        kwargs["protocol"] = protocol

    app = Flask(__name__)
    app.secret_key = "test secret key"  # SESSION_USE_SIGNER signs the id with it
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_PERMANENT"] = False
    app.config["SESSION_USE_SIGNER"] = True
    app.config["SESSION_KEY_PREFIX"] = "myapp:"
    app.config["SESSION_REDIS"] = redis.Redis(host=host, port=port, **kwargs)
    Session(app)

    @app.route("/")
    def hello():
        session["username"] = "Alice"
        return "Session data set!"

    @app.route("/get")
    def get_session():
        return f"Username: {session.get('username')}"

    @app.route("/logout")
    def logout():
        session.clear()
        return "cleared"

    @app.route("/regenerate")
    def regenerate():
        app.session_interface.regenerate(session)
        return "regenerated"

    return app


@pytest.fixture
def app(protocol):
    app = make_app(protocol)
    yield app
    app.config["SESSION_REDIS"].close()


def session_keys(r):
    return {k.decode() for k in r.scan_iter(match="myapp:*", count=100)}


def test_set_then_get(app, r):
    before = session_keys(r)
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "Session data set!"
    assert client.get("/get").get_data(as_text=True) == "Username: Alice"

    new = session_keys(r) - before
    assert len(new) == 1, new
    key = new.pop()
    # Flask-Session sets an expiry (PERMANENT_SESSION_LIFETIME, 31 days by default).
    ttl = r.ttl(key)
    assert 0 < ttl <= 31 * 24 * 3600
    assert r.exists(key) == 1

    # A second browser has its own session.
    other = app.test_client()
    assert other.get("/get").get_data(as_text=True) == "Username: None"


def test_clear_removes_the_key(app, r):
    client = app.test_client()
    before = session_keys(r)
    client.get("/")
    key = (session_keys(r) - before).pop()
    assert client.get("/logout").get_data(as_text=True) == "cleared"
    assert r.exists(key) == 0
    assert client.get("/get").get_data(as_text=True) == "Username: None"


def test_regenerate_moves_the_session(app, r):
    client = app.test_client()
    before = session_keys(r)
    client.get("/")
    old = (session_keys(r) - before).pop()
    value = r.get(old)

    assert client.get("/regenerate").get_data(as_text=True) == "regenerated"
    assert r.exists(old) == 0
    new = (session_keys(r) - before) - {old}
    assert len(new) == 1, new
    assert r.get(new.pop()) == value
    assert client.get("/get").get_data(as_text=True) == "Username: Alice"
