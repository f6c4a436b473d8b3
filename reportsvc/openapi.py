"""OpenAPI schema post-processing: document the errors every endpoint can answer."""

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
    """Add 401/403 (and 404 for paths with parameters) to every operation."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for path, operations in result.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            media_types = _media_types(responses)
            for code, description in COMMON_ERRORS.items():
                responses.setdefault(code, _error_response(description, media_types))
            if "{" in path:
                responses.setdefault("404", _error_response("Not found.", media_types))
    return result
