"""Django 5.2's cache sessions on Django's own Redis cache backend, against sessiond:

    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                          "LOCATION": "redis://HOST:PORT"}}
    SESSION_ENGINE = "django.contrib.sessions.backends.cache"

Sessions are driven both through SessionStore (create, load, cycle_key at login, flush at
logout) and through a view behind SessionMiddleware with Django's test client; the cache's
set_many / get_many / delete_many run against the same server. Each RESP version is a cache
alias of its own: "default" (the library's default), "resp2" and "resp3".
"""

import uuid

import django
import pytest
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from conftest import connection_kwargs, resp_addr

ALIASES = {"default": None, "resp2": 2, "resp3": 3}


def cache_settings():
    host, port = resp_addr()
    options = connection_kwargs("app")
    # Django passes OPTIONS to redis-py's ConnectionPool.from_url, where TLS is the
    # `rediss://` scheme rather than `ssl=True`.
    scheme = "rediss" if options.pop("ssl", False) else "redis"
    caches = {}
    for alias, protocol in ALIASES.items():
        alias_options = dict(options)
        if protocol is not None:
            alias_options["protocol"] = protocol
        caches[alias] = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"{scheme}://{host}:{port}",
            "OPTIONS": alias_options,
            "KEY_PREFIX": "django",
        }
    return caches


def visit(request):
    """Counts the visits of one browser in its session."""
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


def login(request):
    """What django.contrib.auth.login does to the session: a new key for the same data."""
    request.session.cycle_key()
    request.session["user"] = "alice"
    return HttpResponse("ok")


def logout(request):
    request.session.flush()
    return HttpResponse("bye")


urlpatterns = [path("visit", visit), path("login", login), path("logout", logout)]

if not settings.configured:
    settings.configure(
        CACHES=cache_settings(),
        SESSION_ENGINE="django.contrib.sessions.backends.cache",
        SESSION_CACHE_ALIAS="default",
        INSTALLED_APPS=["django.contrib.sessions"],
        MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware"],
        ROOT_URLCONF=__name__,
        SECRET_KEY="django test secret key",
        USE_TZ=True,
        ALLOWED_HOSTS=["testserver"],
    )
    django.setup()

from django.contrib.sessions.backends.cache import KEY_PREFIX, SessionStore  # noqa: E402
from django.core.cache import caches  # noqa: E402
from django.test import Client, override_settings  # noqa: E402


@pytest.fixture
def alias(protocol):
    return {None: "default", 2: "resp2", 3: "resp3"}[protocol]


def stored_key(session_key):
    """The key the cache backend stores a session under: KEY_PREFIX:version:key."""
    return f"django:1:{KEY_PREFIX}{session_key}"


def test_session_store_lifecycle(alias, r):
    with override_settings(SESSION_CACHE_ALIAS=alias):
        session = SessionStore()
        session["user_id"] = 42
        session.set_expiry(300)
        session.create()  # cache.add: SET NX EX
        key = session.session_key
        session.save()
        assert SessionStore(session_key=key)["user_id"] == 42
        assert session.exists(key)
        assert 0 < r.ttl(stored_key(key)) <= 300

        # Login: cycle_key moves the data to a new key and deletes the old one.
        session.cycle_key()
        new_key = session.session_key
        assert new_key != key
        assert not session.exists(key)
        assert r.get(stored_key(key)) is None
        assert SessionStore(session_key=new_key)["user_id"] == 42

        # Logout.
        session.flush()
        assert not SessionStore().exists(new_key)
        assert r.exists(stored_key(new_key)) == 0

        # A key the store does not hold loads as an empty session with a new key.
        stranger = SessionStore(session_key="x" * 32)
        assert stranger.load() == {}


def test_sessions_through_the_middleware(alias, r):
    with override_settings(SESSION_CACHE_ALIAS=alias):
        browser = Client()
        assert [browser.get("/visit").content for _ in range(3)] == [b"1", b"2", b"3"]
        key = browser.cookies[settings.SESSION_COOKIE_NAME].value
        assert r.exists(stored_key(key)) == 1

        assert browser.get("/login").status_code == 200
        new_key = browser.cookies[settings.SESSION_COOKIE_NAME].value
        assert new_key != key
        assert r.exists(stored_key(key)) == 0
        assert browser.get("/visit").content == b"4"
        assert SessionStore(session_key=new_key)["user"] == "alice"

        browser.get("/logout")
        assert r.exists(stored_key(new_key)) == 0
        assert browser.get("/visit").content == b"1"


def test_cache_set_many_get_many_delete_many(alias, r):
    cache = caches[alias]
    prefix = uuid.uuid4().hex
    data = {
        f"{prefix}:count": 7,
        f"{prefix}:profile": {"name": "Alice", "roles": ["admin", "ops"]},
        f"{prefix}:text": "héllo",
    }
    # set_many is one redis-py pipeline with transaction=True: MULTI, MSET, one EXPIRE per
    # key, EXEC.
    assert cache.set_many(data, timeout=120) == []
    assert cache.get_many(list(data) + [f"{prefix}:none"]) == data
    for key in data:
        assert 0 < r.ttl(f"django:1:{key}") <= 120
    assert cache.has_key(f"{prefix}:text")
    cache.delete_many([f"{prefix}:count", f"{prefix}:profile"])
    assert cache.get_many(list(data)) == {f"{prefix}:text": "héllo"}

    assert cache.add(f"{prefix}:once", "first", timeout=60) is True
    assert cache.add(f"{prefix}:once", "second", timeout=60) is False
    assert cache.get(f"{prefix}:once") == "first"
    assert cache.touch(f"{prefix}:once", timeout=30) is True
    assert 0 < r.ttl(f"django:1:{prefix}:once") <= 30
    cache.delete(f"{prefix}:once")
    assert cache.get(f"{prefix}:once", "gone") == "gone"
