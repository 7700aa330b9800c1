"""What a request validation error says, as errors that each name a field a client sent.

Pydantic's own locations are for programmers: a JSON syntax error is located at a field
named after the character where parsing stopped, and each alternative of a union type
(`str | list[...]`) fails under a field named after the type. Here a syntax error is
"body is not valid JSON at byte N", a union's alternatives become one error for its field
("must be a string or a list of objects"), and a body that is not JSON because no
content-type said so is told that.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

FieldError = dict[str, str]

# A location part that names a union's alternative, not a field: `str`, `list[dict[str,any]]`…
_SCALARS = {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean", "none": "null"}
_TAG = re.compile(r"^(?:str|int|float|bool|none|bytes|[a-z-]+\[.*\])$")


def field_errors(errors: Sequence[Any], content_type: str | None, body: Any) -> list[FieldError]:
    """One error per wrong field (a union's alternatives folded into one), in the order met."""
    out: dict[tuple[str, str], FieldError] = {}
    unions: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        location = loc[0] if loc else "body"
        if error.get("type") == "json_invalid":
            out[(location, "body")] = _syntax(error, body)
            continue
        if loc == ["body"] and not _is_json(content_type):
            out[(location, "content-type")] = _media_type(content_type)
            continue
        path = loc[1:]
        tag = next((i for i, part in enumerate(path) if _TAG.match(part)), None)
        if tag is None:
            field = ".".join(path) or location
            out.setdefault((location, field), {"field": field, "location": location, "message": error["msg"]})
            continue
        field = ".".join(path[:tag]) or location
        deeper = ".".join(path[tag + 1 :])
        unions.setdefault((location, field), []).append(
            (path[tag], f"{deeper}: {error['msg']}" if deeper else "")
        )
        out.setdefault((location, field), {"field": field, "location": location, "message": ""})
    for (location, field), alternatives in unions.items():
        out[(location, field)]["message"] = _union_message(alternatives)
    return list(out.values())


def _syntax(error: Any, body: Any) -> FieldError:
    """A JSON syntax error, located by byte as a client counts (the parser counts characters
    of the decoded text)."""
    position = error["loc"][-1] if isinstance(error["loc"][-1], int) else None
    why = str((error.get("ctx") or {}).get("error", "")).strip()
    where = ""
    if position is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        at = len(text[:position].encode("utf-8", "surrogatepass")) if isinstance(text, str) else position
        where = f" at byte {at}"
    message = f"body is not valid JSON{where}" + (f": {why}" if why else "")
    return {"field": "body", "location": "body", "message": message}


def _is_json(content_type: str | None) -> bool:
    media = (content_type or "").split(";")[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def _media_type(content_type: str | None) -> FieldError:
    given = f"it is {content_type.split(';')[0].strip()!r}" if content_type else "none was given"
    return {
        "field": "content-type",
        "location": "header",
        "message": f"the body must be JSON sent with content-type: application/json ({given})",
    }


def _union_message(alternatives: list[tuple[str, str]]) -> str:
    """ "must be a string or a list of objects", and what failed inside an alternative."""
    kinds = list(dict.fromkeys(tag for tag, _ in alternatives))
    inside = [f"as {_described(tag)}, {why}" for tag, why in alternatives if why]
    text = "must be " + " or ".join(_described(tag) for tag in kinds)
    return text + (f" ({'; '.join(inside)})" if inside else "")


def _described(tag: str) -> str:
    """A type as a person says it: `list[dict[str,any]]` is "a list of objects"."""
    if tag in _SCALARS:
        return _SCALARS[tag]
    outer, _, inner = tag.partition("[")
    inner = inner[:-1] if inner.endswith("]") else inner
    if outer == "list":
        item = _described(inner)
        plural = {
            "a string": "strings",
            "an integer": "integers",
            "a number": "numbers",
            "an object": "objects",
        }
        return f"a list of {plural.get(item, 'items')}" if inner else "a list"
    if outer == "dict":
        return "an object"
    return outer
