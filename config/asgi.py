"""ASGI entry point."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import config.celery  # noqa: F401  (web processes dispatch tasks: bind them to our app)

application = get_asgi_application()

from audits.checks.checks import require_valid_profiles  # noqa: E402
from audits.ledger.checks import require_signing_key  # noqa: E402
from governance.checks import require_valid_policies  # noqa: E402

require_signing_key()
require_valid_policies()
require_valid_profiles()
