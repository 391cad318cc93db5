"""Production settings: the base settings plus the hardening Django's deployment checklist asks.

Selected with ``DJANGO_SETTINGS_MODULE=config.settings.production``. The secret key must come from
``DJANGO_SECRET_KEY`` or ``DJANGO_SECRET_KEY_FILE``: production never generates one.
"""

from config.env import SettingError, env_bool, env_int, env_secret

from .base import *  # noqa: F403

if env_secret("DJANGO_SECRET_KEY") is None:
    raise SettingError("DJANGO_SECRET_KEY", "is required in production (or DJANGO_SECRET_KEY_FILE)")
if DEBUG:  # noqa: F405
    raise SettingError("DJANGO_DEBUG", "must be off in production")

SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31536000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
