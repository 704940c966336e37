"""Settings per process: production by default, and production refuses to start incomplete."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Long, varied, and starting with `$`, which django-environ would read as a variable's name.
SECRET = "$ecret-" + "k3y!@#%^&*(-_=+)" * 4
COMPLETE = {
    "SECRET_KEY": SECRET,
    "ALLOWED_HOSTS": "shop.example.com",
    "PUBLIC_BASE_URL": "https://shop.example.com",
}


def run(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run a command from the project root in an environment with only what is given."""
    base = {
        k: v
        for k, v in os.environ.items()
        # The browser tests allow async-unsafe calls in this process; a deployment never does.
        if k
        not in {
            "DJANGO_SETTINGS_MODULE",
            "SECRET_KEY",
            "ALLOWED_HOSTS",
            "PUBLIC_BASE_URL",
            "DJANGO_ALLOW_ASYNC_UNSAFE",
        }
        and not k.startswith(("SECURE_", "USE_X_", "HEALTHZ_", "SECRET_KEY_"))
    }
    return subprocess.run(
        args, cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "manage.py", *args], **env)


def settings_value(expression: str, **env: str) -> str:
    """Evaluate `expression` against the settings the environment selects (production unless
    DJANGO_SETTINGS_MODULE is given), the way wsgi.py loads them."""
    code = f"import nudged.wsgi\nfrom django.conf import settings\nprint(repr({expression}))"
    result = run([sys.executable, "-c", code], **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.mark.parametrize(
    ("missing", "line"),
    [
        ("SECRET_KEY", "SECRET_KEY is not set; production needs it."),
        ("ALLOWED_HOSTS", "ALLOWED_HOSTS is not set; production needs it."),
        ("PUBLIC_BASE_URL", "PUBLIC_BASE_URL is not set; production needs it."),
    ],
)
def test_manage_py_defaults_to_production_and_names_what_is_missing(missing: str, line: str):
    env = {k: v for k, v in COMPLETE.items() if k != missing}

    result = manage("check", **env)

    assert result.returncode == 1
    assert result.stderr == f"nudged.settings.production: {line}\n"
    assert result.stdout == ""


def test_an_http_public_base_url_is_refused_in_production():
    result = manage("check", **{**COMPLETE, "PUBLIC_BASE_URL": "http://127.0.0.1:8000"})

    assert result.returncode == 1
    assert result.stderr.startswith("nudged.settings.production: PUBLIC_BASE_URL must be")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("proxies", "line"),
    [
        ("10.0.0.1/8", "TRUSTED_PROXIES: 10.0.0.1/8 has host bits set."),
        ("10.0.0.0/8,load-balancer", "TRUSTED_PROXIES: 'load-balancer' does not appear to be"),
    ],
)
def test_a_trusted_proxy_that_is_not_a_network_stops_the_process_with_one_line(
    proxies: str, line: str
):
    result = manage("check", **{**COMPLETE, "TRUSTED_PROXIES": proxies})

    assert result.returncode == 1
    assert result.stderr.startswith(f"nudged.settings.production: {line}")
    assert len(result.stderr.splitlines()) == 1


def test_no_message_prints_the_secret_key():
    result = manage("check", SECRET_KEY=SECRET, ALLOWED_HOSTS="shop.example.com")

    assert result.returncode == 1
    assert SECRET not in result.stderr
    assert SECRET[1:] not in result.stderr


def test_check_deploy_with_a_complete_environment_finds_no_issues():
    result = manage("check", "--deploy", "--fail-level", "WARNING", **COMPLETE)

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_secret_key_is_taken_as_it_is():
    assert settings_value("settings.SECRET_KEY", **COMPLETE) == repr(SECRET)
    local = {"DJANGO_SETTINGS_MODULE": "nudged.settings.local", "SECRET_KEY": "$abc"}
    assert settings_value("settings.SECRET_KEY", **local) == repr("$abc")


def test_previous_keys_come_from_secret_key_fallbacks():
    fallbacks = "$old-one-" + "a" * 40 + ",old-two-" + "b" * 40

    value = settings_value(
        "settings.SECRET_KEY_FALLBACKS", **COMPLETE, SECRET_KEY_FALLBACKS=fallbacks
    )

    assert value == repr(fallbacks.split(","))


def test_wsgi_uses_production_settings_with_safe_https_defaults():
    values = settings_value(
        "(settings.SETTINGS_MODULE, settings.DEBUG, settings.SECURE_SSL_REDIRECT,"
        " settings.SECURE_HSTS_SECONDS, settings.SECURE_PROXY_SSL_HEADER)",
        **COMPLETE,
    )

    assert values == repr(("nudged.settings.production", False, True, 31536000, None))


def test_https_settings_come_from_the_environment():
    values = settings_value(
        "(settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS,"
        " settings.SECURE_PROXY_SSL_HEADER)",
        **COMPLETE,
        SECURE_SSL_REDIRECT="false",
        SECURE_HSTS_SECONDS="60",
        USE_X_FORWARDED_PROTO="true",
    )

    assert values == repr((False, 60, ("HTTP_X_FORWARDED_PROTO", "https")))


def test_local_tooling_names_its_settings_explicitly():
    result = manage("check", DJANGO_SETTINGS_MODULE="nudged.settings.local")

    assert result.returncode == 0, result.stderr


def test_production_always_publishes_events_whatever_the_environment_says():
    # Events off would silently stop restocking: no environment variable turns them off.
    assert settings_value("settings.EVENTS_ENABLED", **COMPLETE, EVENTS_ENABLED="0") == "True"


@pytest.mark.django_db
def test_a_kept_connection_the_server_dropped_is_replaced_before_the_next_request():
    from django.db import connection, connections

    kept = connections.create_connection("default")
    try:
        with kept.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            [[connection_id]] = cursor.fetchall()
        # What a MySQL restart does to every connection the web processes keep.
        with connection.cursor() as cursor:
            cursor.execute(f"KILL {int(connection_id)}")

        # What Django does when the next request starts (request_started).
        kept.close_if_unusable_or_obsolete()

        with kept.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchall() == ((1,),)
    finally:
        kept.close()
