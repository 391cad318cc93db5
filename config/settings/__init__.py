"""Settings of the service. ``config.settings`` is the embedded default (base); see base.py.

``config.settings.production`` adds the deployment hardening, ``config.settings.test`` the
test-suite conveniences. Every value comes from an environment variable (config/env.py).
"""

from .base import *  # noqa: F403
