"""Tokens expire and can be revoked: `agentlog token create --expires-in`, `token list`, `token
revoke`; an expired or revoked token answers 401 with WWW-Authenticate at once, through the real
api on a real Postgres (the CLI runs against the same database)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from agentlog.cli import app
from tests.services import Stack, stack_on

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, auth_required=True) as stack:
        await stack.start_api()
        yield stack


async def cli(stack: Stack, tmp_path: Path, *args: str) -> Result:
    env = {"AGENTLOG_DATABASE_URL": stack.settings.database_url, "COLUMNS": "200"}
    argv = ["token", *args, "--data-dir", str(tmp_path)]
    return await asyncio.to_thread(CliRunner().invoke, app, argv, env=env, catch_exceptions=False)


async def listed(stack: Stack, tmp_path: Path) -> list[dict[str, Any]]:
    result = await cli(stack, tmp_path, "list", "--tenant", "acme", "--json")
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


async def status(stack: Stack, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=30) as api:
        return await api.get("/v1/sessions", headers={"Authorization": f"Bearer {token}"})


def assert_refused(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    assert (
        r.headers["www-authenticate"].startswith("Bearer")
        and "invalid_token" in r.headers["www-authenticate"]
    )
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_expired_and_revoked_tokens_answer_401(stack: Stack, tmp_path: Path) -> None:
    made = await cli(stack, tmp_path, "create", "acme", "--name", "ci", "--expires-in", "1h")
    assert made.exit_code == 0, made.output
    expiring = made.stdout.strip()
    made = await cli(stack, tmp_path, "create", "acme", "--name", "forever")
    forever = made.stdout.strip()
    assert (await status(stack, expiring)).status_code == 200
    assert (await status(stack, forever)).status_code == 200

    tokens = await listed(stack, tmp_path)
    assert [(t["name"], t["status"], t["revoked_at"]) for t in tokens] == [
        ("ci", "active", None),
        ("forever", "active", None),
    ]
    ci, kept = tokens
    lasts = datetime.fromisoformat(ci["expires_at"]) - datetime.fromisoformat(ci["created_at"])
    assert timedelta(minutes=59) < lasts <= timedelta(hours=1) and kept["expires_at"] is None
    listing = (await cli(stack, tmp_path, "list")).stdout
    assert expiring not in listing and forever not in listing and ci["token_id"] in listing

    revoked = await cli(stack, tmp_path, "revoke", kept["token_id"])
    assert revoked.exit_code == 0 and kept["token_id"] in revoked.stdout, revoked.output
    assert_refused(await status(stack, forever))

    await stack.sql(
        "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE starts_with(token_sha256, %s)",
        ci["token_id"],
    )
    assert_refused(await status(stack, expiring))
    assert [t["status"] for t in await listed(stack, tmp_path)] == ["expired", "revoked"]


async def test_revoke_by_the_token_itself_and_bad_input(stack: Stack, tmp_path: Path) -> None:
    token = (await cli(stack, tmp_path, "create", "acme", "--name", "by-token")).stdout.strip()
    assert (await status(stack, token)).status_code == 200
    assert (await cli(stack, tmp_path, "revoke", token)).exit_code == 0
    assert_refused(await status(stack, token))
    again = await cli(stack, tmp_path, "revoke", token)  # nothing changes, and says so
    assert again.exit_code == 0 and "revoked token" in again.stdout
    for bad in ("0" * 12, "xyz", "agl_never-issued"):
        result = await cli(stack, tmp_path, "revoke", bad)
        assert result.exit_code == 1 and "agentlog:" in result.output, (bad, result.output)
    for lifetime in ("0", "-1d", "soon", "1y"):
        result = await cli(stack, tmp_path, "create", "acme", "--expires-in", lifetime)
        assert result.exit_code == 2 and "--expires-in" in result.output, (lifetime, result.output)
