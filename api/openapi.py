"""The served OpenAPI schema: every error documented as problem+json (RFC 9457)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An RFC 9457 problem; validation errors list each wrong field.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "string"},
                    "message": {"type": "string"},
                },
            },
        },
    },
    "required": ["type", "title", "status"],
}

ERRORS = {
    "400": "the body is not valid JSON",
    "401": "no token, or a token nobody issued (WWW-Authenticate: Bearer)",
    "413": "the body is over the size limit",
    "422": "a field is invalid (each is named in `errors`)",
}


def install(app: FastAPI) -> None:
    """Replace the app's schema builder with one that documents every error response."""

    def schema() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        built = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        components = built.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, operations in built.get("paths", {}).items():
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                if path.startswith("/v1"):
                    operation["security"] = [{"bearer": []}]
                    responses.setdefault("401", {"description": ERRORS["401"]})
                    responses.setdefault("422", {"description": ERRORS["422"]})
                if "requestBody" in operation:
                    responses.setdefault("400", {"description": ERRORS["400"]})
                    responses.setdefault("413", {"description": ERRORS["413"]})
                for code, response in responses.items():
                    if code[0] in "45":
                        response["content"] = problem
                        response.setdefault("description", ERRORS.get(code, "an error"))
        components.get("schemas", {}).pop("HTTPValidationError", None)
        components.get("schemas", {}).pop("ValidationError", None)
        app.openapi_schema = built
        return built

    app.openapi = schema  # type: ignore[method-assign]
