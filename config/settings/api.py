"""REST API settings (DRF, drf-spectacular, the input boundary, API tokens), read into base.py.

docs/configuration.md lists the variables; production.py turns ``API_DOCS_REQUIRE_SIGN_IN`` on.
"""

from __future__ import annotations

from config.env import env_bool, env_int

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.authentication.ApiTokenAuthentication",
        "governance.authentication.VerifiedSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["common.parsers.BoundedJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "common.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "common.pagination.Pagination",
    "PAGE_SIZE": 100,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "LLMOps governance service API",
    "DESCRIPTION": (
        "Approval workflows, inventory and the signed ledger of an organisation's LLM work. "
        "Authenticate with `Authorization: Token <token>`."
    ),
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "common.api_schema.add_error_responses",
    ],
    # Choice sets whose field name ("kind", "match") other components use too: named by their model.
    "ENUM_NAME_OVERRIDES": {
        "PiiListKindEnum": "governance.models.PiiListKind",
        "PiiListMatchEnum": "governance.models.PiiListMatch",
    },
}
# The API's input boundary (common/parsers.py, issue 26): the largest JSON body in bytes (a larger
# one is a 413) and the deepest nesting of arrays and objects in it (deeper is a 400); whether
# /api/schema/ and /api/docs/ need a signed-in caller (production.py: yes unless set).
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 32, minimum=2)
API_DOCS_REQUIRE_SIGN_IN = env_bool("API_DOCS_REQUIRE_SIGN_IN", False)
API_TOKEN_PREFIX = "gov"  # noqa: S105 (the public part of every token, not a secret)
# The longest a token made by its own user (admin or API) may live, in days.
API_TOKEN_MAX_DAYS = env_int("API_TOKEN_MAX_DAYS", 365, minimum=1)
