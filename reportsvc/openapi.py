"""OpenAPI schema post-processing: make the schema a contract a generated client can trust.

drf-spectacular describes what the views declare; these hooks add what every endpoint
shares (errors, authentication) and correct what it cannot know: which fields depend on
the caller's permissions, and how OpenAPI 3.0 tools read a nullable reference.
"""

import copy
from collections import defaultdict

from django.conf import settings

ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}

VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Each invalid field (`non_field_errors` for the whole body, or a header "
    "name such as `Idempotency-Key`) with its messages. A body that is not JSON gets "
    '`{"detail": "JSON parse error - …"}`.',
    "additionalProperties": {
        "oneOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]
    },
    "example": {"schedule": ["Invalid schedule '0 25 * * *': hour: 25 is out of range 0-23."]},
}

# What CSVRenderer makes of an error: a header row `detail`, then the message.
CSV_ERROR_SCHEMA = {
    "type": "string",
    "description": "A one-row CSV (UTF-8): the header `detail`, then the message.",
}
CSV_ERROR_EXAMPLES = {
    "401": "Authentication credentials were not provided.",
    "403": "You do not have permission to perform this action.",
    "404": "Not found.",
    "409": "Run 12 is queued; its output is not ready yet.",
    "503": "The output file of run 12 cannot be fetched now: the storage did not answer "
    "in time (…). Try again in 5 s.",
}

WWW_AUTHENTICATE = {
    "description": "`Token`: send `Authorization: Token <key>`.",
    "schema": {"type": "string"},
    "required": True,
}

COMMON_ERRORS = {
    "401": "Not authenticated: send `Authorization: Token …` or log in.",
    "403": "Authenticated, but without the permission this needs.",
}

UNSUPPORTED_MEDIA_TYPE = "The body is not `application/json` (the only type accepted)."

# Any operation, for a request with a token: the client's address sent too many invalid
# ones (TOKEN_FAILURE_LIMIT), so its tokens are refused until the window ends.
TOKENS_PAUSED = (
    "Too many invalid tokens came from the client's address: its tokens are refused "
    "until `Retry-After` seconds have passed."
)
RETRY_AFTER = {
    "description": "Seconds to wait before asking again.",
    "schema": {"type": "integer"},
}

# The objects responses are made of. Each sends every property, except those named
# here, which it leaves out for users without a permission (see the serializers'
# to_representation): those are optional, so clients do not fail for such users.
SQL_ONLY_FOR = "holders of view_report_sql"
RESPONSE_OBJECTS = {
    "Report": {"sql": SQL_ONLY_FOR},
    "Run": {"sql": SQL_ONLY_FOR},
    "RunSummary": {},
    "Delivery": {},
    "WebhookSecret": {},
    "ReportVersion": {},
    "ReportVersionDetail": {},
    "ReportChange": {},
    "ReportVersionSettings": {"sql": SQL_ONLY_FOR},
}

SECURITY_DESCRIPTIONS = {
    "tokenAuth": (
        "Send `Authorization: Token <key>`: the word `Token`, one space, then the key "
        "(not `Bearer`). Keys are made in the admin under API tokens, or with "
        "`manage.py createapitoken USERNAME`, and shown once: the service keeps only a "
        "digest."
    ),
    "cookieAuth": (
        "The admin's session cookie, for the browser (Swagger UI). Unsafe methods also "
        "need the `X-CSRFToken` header."
    ),
}


def _error_content(media_types):
    """JSON errors; CSV ones are described by _describe_csv_errors."""
    return {
        media_type: {"schema": {"$ref": "#/components/schemas/Error"}} for media_type in media_types
    }


def _error_media_types(responses):
    """Errors come in the media types the operation answers in: JSON, or CSV too for
    downloads (to clients that accept CSV but not JSON). JSON is listed first: clients
    that pick the first known type then read errors as JSON, which they get by default."""
    types = {"application/json"}
    for code, response in responses.items():
        if str(code).startswith("2"):
            types |= set(response.get("content", {}))
    return [media_type for media_type in ("application/json", "text/csv") if media_type in types]


def _describe_csv_errors(responses):
    """A CSV-rendered error is a CSV string, not the JSON Error object."""
    for code, response in responses.items():
        content = response.get("content", {})
        if str(code)[0] in "45" and "text/csv" in content:
            schema = dict(CSV_ERROR_SCHEMA)
            if str(code) in CSV_ERROR_EXAMPLES:
                schema["example"] = f"detail\n{CSV_ERROR_EXAMPLES[str(code)]}\n"
            content["text/csv"] = {"schema": schema}


def _add_tokens_paused(responses, media_types):
    """429 for a paused address, beside an operation's own 429 (the run throttle)."""
    throttled = responses.setdefault(
        "429", {"description": TOKENS_PAUSED, "content": _error_content(media_types)}
    )
    if throttled["description"] != TOKENS_PAUSED:
        throttled["description"] += f" Or: {TOKENS_PAUSED[0].lower()}{TOKENS_PAUSED[1:]}"
    throttled.setdefault("headers", {}).setdefault("Retry-After", copy.deepcopy(RETRY_AFTER))


def add_error_responses(result, generator, request, public):
    """Add 401/403/429 to every operation, 404 to paths with parameters, 413 to writes,
    415 to operations with a body, and describe error bodies as what they are."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    # Copies: the document is made anew for each request, the constants stay as they are.
    schemas["Error"] = copy.deepcopy(ERROR_SCHEMA)
    schemas["ValidationError"] = copy.deepcopy(VALIDATION_ERROR_SCHEMA)
    too_large = (
        f"The request body is over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE:,} bytes; "
        "nothing was read or changed."
    )
    for path, operations in result.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            media_types = _error_media_types(responses)
            for code, description in COMMON_ERRORS.items():
                responses.setdefault(
                    code, {"description": description, "content": _error_content(media_types)}
                )
            headers = responses["401"].setdefault("headers", {})
            headers["WWW-Authenticate"] = copy.deepcopy(WWW_AUTHENTICATE)
            _add_tokens_paused(responses, media_types)
            if "{" in path:
                responses.setdefault(
                    "404", {"description": "Not found.", "content": _error_content(media_types)}
                )
            if method in ("post", "put", "patch"):
                responses.setdefault(
                    "413", {"description": too_large, "content": _error_content(media_types)}
                )
            if "requestBody" in operation:
                responses.setdefault(
                    "415",
                    {
                        "description": UNSUPPORTED_MEDIA_TYPE,
                        "content": _error_content(["application/json"]),
                    },
                )
            _describe_csv_errors(responses)
    return result


COMPONENT = "#/components/schemas/"


def _nullable_wrapper(node):
    """The component that {allOf: [{$ref: …}], nullable: true} wraps, else None."""
    all_of = node.get("allOf")
    if node.get("nullable") and isinstance(all_of, list) and len(all_of) == 1:
        return all_of[0].get("$ref", "").removeprefix(COMPONENT) or None
    return None


def _references(node, wrapped, plain):
    """Collect the components referenced through a nullable wrapper, and otherwise."""
    if isinstance(node, dict):
        name = _nullable_wrapper(node)
        if name:
            wrapped[name].append(node)
            node = {key: value for key, value in node.items() if key != "allOf"}
        elif "$ref" in node:
            plain.add(node["$ref"].removeprefix(COMPONENT))
        for value in node.values():
            _references(value, wrapped, plain)
    elif isinstance(node, list):
        for value in node:
            _references(value, wrapped, plain)


def _nullable_references(result):
    """Make {allOf: [$ref X], nullable: true} a plain $ref to X, with X nullable.

    OpenAPI 3.0.3: nullable adds null only to a `type` in the same schema object, so
    strict validators refuse null for that wrapper (the object it refers to is not
    null). A nullable component is the form that validators and generators
    (openapi-python-client, datamodel-code-generator) all read as "this object or null".
    A component also used where null is not allowed is left as it is.
    """
    wrapped, plain = defaultdict(list), set()
    _references(result, wrapped, plain)
    schemas = result["components"]["schemas"]
    for name, wrappers in wrapped.items():
        if name in plain:
            continue
        schemas[name]["nullable"] = True
        for wrapper in wrappers:
            wrapper.clear()  # siblings of a $ref are ignored in 3.0 (readOnly, description)
            wrapper["$ref"] = COMPONENT + name


def describe_for_clients(result, generator, request, public):
    """Nullable references OpenAPI 3.0 tools accept, response objects whose fields are
    required unless some users do not get them, and how to authenticate."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    _nullable_references(result)
    for name, sometimes_left_out in RESPONSE_OBJECTS.items():
        properties = schemas[name]["properties"]
        schemas[name]["required"] = [
            field for field in properties if field not in sometimes_left_out
        ]
        for field, who in sometimes_left_out.items():
            text = properties[field].get("description", "")
            properties[field]["description"] = (
                f"{text} Sent only to {who}: absent for others.".strip()
            )
    for name, description in SECURITY_DESCRIPTIONS.items():
        scheme = components.get("securitySchemes", {}).get(name)
        if scheme is not None:
            scheme["description"] = description
    return result
