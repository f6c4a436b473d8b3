"""OpenAPI schema post-processing: document the errors every endpoint can answer."""

from django.conf import settings

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}

COMMON_ERRORS = {
    "401": "Not authenticated: send `Authorization: Token …` or log in.",
    "403": "Authenticated, but without the permission this needs.",
}


def _error_response(description, media_types):
    schema = {"$ref": "#/components/schemas/Error"}
    return {
        "description": description,
        "content": {media_type: {"schema": schema} for media_type in media_types},
    }


def _media_types(responses):
    """Errors come in the media types the operation answers in (JSON, or CSV too)."""
    types = {"application/json"}
    for code, response in responses.items():
        if str(code).startswith("2"):
            types |= set(response.get("content", {}))
    return sorted(types & {"application/json", "text/csv"})


def add_error_responses(result, generator, request, public):
    """Add 401/403 to every operation, 404 to paths with parameters, 413 to writes."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    too_large = (
        f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes; "
        "nothing was read or changed."
    )
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            media_types = _media_types(responses)
            for code, description in COMMON_ERRORS.items():
                responses.setdefault(code, _error_response(description, media_types))
            if "{" in path:
                responses.setdefault("404", _error_response("Not found.", media_types))
            if method in ("post", "put", "patch"):
                responses.setdefault("413", _error_response(too_large, media_types))
    return result
