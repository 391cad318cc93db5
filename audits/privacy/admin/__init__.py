"""Admin pages of the data-subject request workflow: ``requests`` (the list, filing a request,
the request's page with its steps and the erasure's confirmation page), ``reviews`` (legal holds,
model reviews). Rows change only through the services; requests are never deleted (they are the
CCPA §7101 request log)."""

from audits.privacy.admin import requests, reviews  # noqa: F401  (registers the pages)
