"""Schemathesis hooks for scripts/fuzz-api: Clarion's own contract on top of the built-in checks.

Every refusal of the API, whatever the operation and whatever the input, is the JSON error
body {"error": {"code", "message", "field"}} (DESIGN.md, section 3), never an empty or HTML body.
"""

import schemathesis


@schemathesis.check
def json_error_shape_on_4xx(ctx, response, case):
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])
    if isinstance(content_type, list):
        content_type = content_type[0] if content_type else ""
    if not content_type.startswith("application/json"):
        raise AssertionError(
            f"{response.status_code} answered with content type {content_type!r}, not JSON"
        )
    try:
        body = response.json()
    except Exception as error:  # noqa: BLE001 - any parse failure is the finding
        raise AssertionError(f"{response.status_code} body is not JSON: {error}") from None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise AssertionError(f"{response.status_code} body has no `error` object")
    if not isinstance(error.get("code"), str) or not error["code"]:
        raise AssertionError(f"{response.status_code} error has no string `code`")
    if not isinstance(error.get("message"), str):
        raise AssertionError(f"{response.status_code} error has no string `message`")
    if "field" not in error or not (error["field"] is None or isinstance(error["field"], str)):
        raise AssertionError(f"{response.status_code} error `field` is not a string or null")
    return None
