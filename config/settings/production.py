"""Production settings: the base settings plus the hardening Django's deployment checklist asks.

Selected with ``DJANGO_SETTINGS_MODULE=config.settings.production``; ``manage.py check --deploy
--fail-level WARNING`` passes with no finding (tests/test_production_settings.py). Start-up stops with
one line naming the variable when:

- ``DJANGO_SECRET_KEY`` (or ``DJANGO_SECRET_KEY_FILE``) is unset, shorter than 50 characters, of
  fewer than 5 distinct characters, or Django's ``django-insecure-`` placeholder: production never
  generates a key;
- ``DJANGO_DEBUG`` is on;
- ``DJANGO_ALLOWED_HOSTS`` is unset (the host names the service answers to, comma-separated).

The service speaks HTTPS only: HTTP is redirected (``DJANGO_SECURE_SSL_REDIRECT``, the health
check excepted), cookies are Secure, HSTS is sent (``DJANGO_HSTS_SECONDS``, one year;
``DJANGO_HSTS_INCLUDE_SUBDOMAINS``, ``DJANGO_HSTS_PRELOAD``). Behind a proxy that terminates TLS,
set ``DJANGO_SECURE_PROXY_SSL_HEADER=X-Forwarded-Proto`` (only if that proxy overwrites the header
the client sent) and ``TRUSTED_PROXY_COUNT`` (base.py) for the client address.

The API's schema and docs pages (``/api/schema/``, ``/api/docs/``) need a signed-in caller (a
token, or an admin session that passed the second factor) unless ``API_DOCS_REQUIRE_SIGN_IN`` is
off; the embedded default serves them to anyone.

Single sign-on (``OIDC_RP_CLIENT_ID``, oidc.py) talks to its provider over HTTPS only: start-up
stops when the issuer or an endpoint is an ``http://`` URL (the client secret, the codes and the
tokens travel there). Its redirect URI is built from the request, so behind a TLS proxy the
proxy header above is what makes it ``https://``.
"""

from config.env import SettingError, env_bool, env_int, env_list, env_optional_str, env_secret

from .base import *  # noqa: F403

_secret_key = env_secret("DJANGO_SECRET_KEY")
if _secret_key is None:
    raise SettingError("DJANGO_SECRET_KEY", "is required in production (or DJANGO_SECRET_KEY_FILE)")
if _secret_key.startswith("django-insecure-") or len(_secret_key) < 50 or len(set(_secret_key)) < 5:
    raise SettingError(
        "DJANGO_SECRET_KEY",
        "is not a production key: use at least 50 random characters "
        "(python -c 'import secrets; print(secrets.token_urlsafe(50))')",
    )
SECRET_KEY = _secret_key
if DEBUG:  # noqa: F405
    raise SettingError("DJANGO_DEBUG", "must be off in production")
if env_optional_str("DJANGO_ALLOWED_HOSTS") is None:
    raise SettingError("DJANGO_ALLOWED_HOSTS", "is required in production: the host names this service answers to")
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", [])
# Origins allowed to POST with the session (the admin's forms): by default https:// + each host.
CSRF_TRUSTED_ORIGINS = env_list(
    "DJANGO_CSRF_TRUSTED_ORIGINS", [f"https://{host.lstrip('.')}" for host in ALLOWED_HOSTS if "*" not in host]
)

SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
# Load balancers probe the health check over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
_proxy_ssl_header = env_optional_str("DJANGO_SECURE_PROXY_SSL_HEADER")
if _proxy_ssl_header is not None:
    # "X-Forwarded-Proto" -> ("HTTP_X_FORWARDED_PROTO", "https"): the request is HTTPS when the proxy says so.
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https")
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 365 * 24 * 3600, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
# The schema lists every endpoint, parameter and error: an attacker's map. Signed-in readers only.
API_DOCS_REQUIRE_SIGN_IN = env_bool("API_DOCS_REQUIRE_SIGN_IN", True)

# Single sign-on: the client secret, the authorization codes and the tokens go to the provider.
if OIDC_ENABLED:  # noqa: F405
    for _name, _url in OIDC_PROVIDER_URLS.items():  # noqa: F405
        if _url and not _url.startswith("https://"):
            raise SettingError(_name, f"must be an https:// URL in production, got {_url!r}")
