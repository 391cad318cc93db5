"""OpenAPI post-processing: every operation documents the error shape it can answer with."""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "fields"],
            "properties": {
                "code": {"type": "string", "description": "stable, for clients to branch on"},
                "message": {"type": "string", "description": "what is wrong, for people"},
                "fields": {"type": "object", "description": "input field -> its problems"},
            },
        }
    },
}
DESCRIPTIONS = {
    "400": "invalid input (the fields say which)",
    "401": "no or invalid credentials",
    "403": "your role may not do this",
    "404": "no such object, or not in a project of yours",
    "409": "the object's state forbids it (closed, changed, already done)",
    "413": "the body is larger than the API accepts (API_MAX_BODY_BYTES)",
    "415": "the body's Content-Type is not one the operation takes (the message names them)",
    "422": "a policy rule forbids it (the message names the rule)",
    "429": "too many requests",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_SCHEMA
    reference = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes = ["400", "401", "403"]
            if "{" in path:
                codes.append("404")
            if method in ("post", "put", "patch", "delete"):
                codes += ["409", "413", "422"]
            if method in ("post", "put", "patch"):
                codes.append("415")
            if operation.get("security") == [{}] or operation.get("security") == []:
                codes.remove("401")
            else:  # the failed-token lockout (any operation) and the per-user rate limits
                codes.append("429")
            for code in codes:
                operation["responses"].setdefault(code, {"description": DESCRIPTIONS[code]})
            for code, response in operation["responses"].items():
                if code.startswith("4"):  # declared by the view or added here: the one error shape
                    response.setdefault("content", reference)
    return result
