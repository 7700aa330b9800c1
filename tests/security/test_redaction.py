"""Secrets never reach the log (invariant 12): fake AWS keys, a GitHub token and a PEM private
key planted in a workspace file and in Bash output are redacted before the ledger, the log
and Postgres see them; every topic record and every text column is then scanned with the
same detector and for the literal values. Ordinary output is left as it was."""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from eventstore import codec
from eventstore.log import read_partition
from processors.tools import bash, redact
from processors.tools.workspace import workspace_for
from tests.services import Stack, stack_on

# Made at run time, so that this file holds no secret-shaped string for scanners to flag.
_rng = random.Random(16)


def _chars(alphabet: str, n: int) -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


AWS_KEY_ID = "AKIA" + _chars(string.ascii_uppercase + string.digits, 16)
AWS_SECRET = _chars(string.ascii_letters + string.digits + "/+", 40)
GITHUB_TOKEN = "ghp_" + _chars(string.ascii_letters + string.digits, 36)
PEM_BODY = [base64.b64encode(_rng.randbytes(48)).decode() for _ in range(6)]
PEM = "\n".join(["-----BEGIN RSA PRIVATE KEY-----", *PEM_BODY, "-----END RSA PRIVATE KEY-----"])
PLANTED = [AWS_KEY_ID, AWS_SECRET, GITHUB_TOKEN, *PEM_BODY]
CREDENTIALS = (
    f"[default]\naws_access_key_id = {AWS_KEY_ID}\naws_secret_access_key = {AWS_SECRET}\n"
    f"github = {GITHUB_TOKEN}\n{PEM}\n"
)


def leaks(text: str) -> list[str]:
    """What the detector or the literal planted values find in `text`."""
    return sorted(set(redact.secrets_in(text).values()) | {v[:8] for v in PLANTED if v in text})


def test_each_planted_secret_is_redacted_and_counted() -> None:
    done = redact.redact(CREDENTIALS)
    assert leaks(done.text) == []
    assert "[REDACTED:AWS Access Key]" in done.text and "[REDACTED:Private Key]" in done.text
    assert dict(done.found) == {
        "AWS Access Key": 1,
        "AWS Secret Access Key": 1,
        "GitHub Token": 1,
        "Private Key": 1,
    }
    assert redact.note(done.found) == (
        "[4 secrets redacted from this result: 1 AWS Access Key, 1 AWS Secret Access Key,"
        " 1 GitHub Token, 1 Private Key]"
    )


def test_ordinary_output_is_left_as_it_was() -> None:
    ordinary = "\n".join(
        [
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty.txt",
            "commit 9fceb02d0ae598e95dc970b74767f19372d61af8",
            "id 123e4567-e89b-12d3-a456-426614174000",
            '"integrity": "sha512-' + base64.b64encode(bytes(range(64))).decode() + '"',
            "https://example.com/path?q=1 user@example.com ghp_ short",
            "[stored as tool output sha256:" + "ab" * 32 + "]",
        ]
    )
    assert redact.redact(ordinary).text == ordinary
    assert redact.redact_content(ordinary) == (ordinary, {})


@pytest.mark.parametrize("at", [0, redact.WINDOW - 20, redact.WINDOW - redact.OVERLAP + 5, 50_000])
def test_a_secret_is_found_wherever_the_scan_windows_fall(at: int) -> None:
    filler = "x " * 40_000
    text = filler[:at] + f" {GITHUB_TOKEN} " + filler[at:]
    done = redact.redact(text)
    assert GITHUB_TOKEN not in done.text and dict(done.found) == {"GitHub Token": 1}


def test_text_blocks_are_redacted_and_other_blocks_kept() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}}
    content, found = redact.redact_content([{"type": "text", "text": f"key {GITHUB_TOKEN}"}, image])
    assert content == [{"type": "text", "text": "key [REDACTED:GitHub Token]"}, image]
    assert redact.with_note(content, found)[-1] == {
        "type": "text",
        "text": "[1 secret redacted from this result: 1 GitHub Token]",
    }


def call(tool: str, **tool_input: Any) -> str:
    return f"call {tool} {json.dumps(tool_input)}"


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    """Every part but the sub-agent workers; results over 2000 characters go to `tool_outputs`."""
    async with stack_on(pg_server, log_dir, tool_result_max_chars=2000) as stack:
        await stack.start("projector", "reactor", "model", "tools")
        await stack.start_api()
        yield stack


async def turn(stack: Stack, sid: str, line: str) -> None:
    done = await stack.turn(sid, line, 60)
    assert done["status"] == "completed", done


async def everything_recorded(stack: Stack) -> list[str]:
    """Every record of every topic, and every text and JSON value of every Postgres table."""
    texts: list[str] = []
    for topic in (codec.EVENTS_TOPIC, codec.DEAD_LETTER_TOPIC):
        for partition in range(stack.settings.partitions):
            async for record in read_partition(stack.settings, partition, topic):
                texts.append((record.value or b"").decode(errors="replace"))
    columns = await stack.sql(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"
        " AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'bytea')"
    )
    for table, column in columns:
        rows = await stack.sql(f'SELECT "{column}"::text FROM "{table}"')
        texts += [str(value) for (value,) in rows if value is not None]
    return texts


@pytest.mark.services
async def test_read_results_never_reach_the_log_or_postgres(stack: Stack) -> None:
    workspace = workspace_for(stack.settings.workspace_root, "default", "leaky-read")
    # Past the result limit, so the whole result goes to `tool_outputs` as well.
    (workspace / "creds.txt").write_text("filler line\n" * 300 + CREDENTIALS)
    await turn(stack, "leaky-read", call("Read", file_path="creds.txt"))
    (text, _), *_ = await stack.sql("SELECT result #>> '{}', is_error FROM tool_calls")
    assert "[REDACTED:GitHub Token]" not in text  # cut: the secrets are past the limit…
    # …and the note says so all the same.
    assert text.endswith(
        "[4 secrets redacted from this result: 1 AWS Access Key, 1 AWS Secret Access Key,"
        " 1 GitHub Token, 1 Private Key]"
    )
    (stored,) = await stack.sql("SELECT content FROM tool_outputs")
    assert "[REDACTED:GitHub Token]" in str(stored[0]) and "filler line" in str(stored[0])
    found = [leak for text in await everything_recorded(stack) for leak in leaks(text)]
    assert found == []


@pytest.mark.services
@pytest.mark.skipif(
    bash.find_program("bwrap") is None,
    reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap",
)
async def test_bash_output_never_reaches_the_log_or_postgres(stack: Stack) -> None:
    workspace = workspace_for(stack.settings.workspace_root, "default", "leaky-bash")
    (workspace / "creds.txt").write_text(CREDENTIALS)
    # stdout from a file, stderr made by the command: both are redacted.
    command = "cat creds.txt; grep github creds.txt >&2"
    await turn(stack, "leaky-bash", call("Bash", command=command))
    ((text,),) = await stack.sql("SELECT result #>> '{}' FROM tool_calls WHERE name = 'Bash'")
    assert "[REDACTED:Private Key]" in text and "[REDACTED:GitHub Token]" in text
    assert "secrets redacted from this result" in text
    found = [leak for text in await everything_recorded(stack) for leak in leaks(text)]
    assert found == []
