"""A refused request says what is wrong in the client's terms: where its JSON breaks (by
byte), which field a union type's alternatives both refused (not one field per Python
type), and that a body without a JSON content-type was not read as JSON."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.invalid import field_errors
from tests.services import Stack, stack_on

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
async def api(pg_server: str, log_dir: Path) -> AsyncIterator[httpx.AsyncClient]:
    stack: Stack
    async with stack_on(pg_server, log_dir) as stack:
        await stack.start_api()
        async with httpx.AsyncClient(base_url=stack.api_url or "") as client:
            yield client


async def _refused(api: httpx.AsyncClient, body: str, headers: dict[str, str]) -> dict[str, Any]:
    r = await api.post("/v1/sessions/e1/messages", content=body.encode(), headers=headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    return dict(r.json())


async def test_a_json_syntax_error_is_located_by_byte(api: httpx.AsyncClient) -> None:
    problem = await _refused(api, '{"content": "hi",, }', JSON)
    assert problem["errors"] == [
        {
            "field": "body",
            "location": "body",
            "message": "body is not valid JSON at byte 17: Expecting property name enclosed in double quotes",
        }
    ]
    assert problem["detail"].startswith("body: body is not valid JSON at byte 17")
    # Bytes, not characters: "é" is two bytes in UTF-8 (the second comma is character 16).
    problem = await _refused(api, '{"content": "é",, }', JSON)
    assert "at byte 17:" in problem["errors"][0]["message"]


async def test_a_unions_alternatives_are_one_error_for_its_field(api: httpx.AsyncClient) -> None:
    problem = await _refused(api, '{"content": 5}', JSON)
    assert problem["errors"] == [
        {"field": "content", "location": "body", "message": "must be a string or a list of objects"}
    ]
    problem = await _refused(api, '{"content": [1]}', JSON)
    (error,) = problem["errors"]
    assert error["field"] == "content"
    assert error["message"] == (
        "must be a string or a list of objects (as a list of objects, 0: Input should be a valid dictionary)"
    )


@pytest.mark.parametrize(
    ("headers", "said"), [({}, "none was given"), ({"content-type": "text/plain"}, "it is 'text/plain'")]
)
async def test_a_body_without_a_json_content_type_says_so(
    api: httpx.AsyncClient, headers: dict[str, str], said: str
) -> None:
    problem = await _refused(api, '{"content": "hi"}', headers)
    (error,) = problem["errors"]
    assert (error["field"], error["location"]) == ("content-type", "header")
    assert error["message"] == f"the body must be JSON sent with content-type: application/json ({said})"


async def test_other_errors_still_name_their_field(api: httpx.AsyncClient) -> None:
    problem = await _refused(api, '{"content": "hi", "max_steps": 0}', JSON)
    assert [e["field"] for e in problem["errors"]] == ["max_steps"]


def test_a_union_inside_a_list_keeps_its_index() -> None:
    errors = [
        {"loc": ("body", "items", 2, "str"), "msg": "Input should be a valid string", "type": "string_type"},
        {"loc": ("body", "items", 2, "int"), "msg": "Input should be a valid integer", "type": "int_type"},
    ]
    assert field_errors(errors, "application/json", b"") == [
        {"field": "items.2", "location": "body", "message": "must be a string or an integer"}
    ]
