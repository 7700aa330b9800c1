"""One tenant id rule, enforced where tenants enter: the settings (AGENTLOG_API_TOKENS), `agentlog
token create`, and — as defense in depth, for ids that
reach the log some other way — the workspace path, which never leaves the workspace root."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pydantic
import pytest
from typer.testing import CliRunner

from agentlog.cli import app
from eventstore import tenants
from eventstore.settings import Settings
from processors.tools.workspace import workspace_for
from tests.services import Stack, stack_on

BAD = ["..", "a..b", "../../etc", "a/b", "a b", "a:b", "a@b", "-lead", ".hidden", "x" * 65, "", "é"]
GOOD = ["default", "acme", "tenant-b", "a.b_c-9", "0", "x" * 64]
SERVICE = "agl_svc_tenant_id_test"


@pytest.mark.parametrize("tenant", BAD)
def test_the_rule_refuses(tenant: str) -> None:
    assert not tenants.is_tenant_id(tenant)
    with pytest.raises(tenants.InvalidTenant, match="letter or digit"):
        tenants.check_tenant_id(tenant)


@pytest.mark.parametrize("tenant", GOOD)
def test_the_rule_admits(tenant: str) -> None:
    assert tenants.check_tenant_id(tenant) == tenant


@pytest.mark.parametrize("tenant", [t for t in BAD if t and ":" not in t])  # the last ":" splits
def test_settings_refuse_a_token_for_an_invalid_tenant_without_echoing_the_token(tenant: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        Settings(api_tokens=f"good-token:acme,secret-token-42:{tenant}")
    assert "api_tokens" in str(refused.value) and "secret-token-42" not in str(refused.value)
    assert Settings(api_tokens="t1:acme,t2:tenant-b").api_tokens == "t1:acme,t2:tenant-b"


@pytest.mark.parametrize("tenant", ["..", "a/b", "a:b"])
def test_token_create_refuses_an_invalid_tenant(tenant: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["token", "create", tenant, "--data-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "invalid tenant id" in result.output


@pytest.mark.parametrize("tenant", BAD)
def test_a_workspace_never_leaves_the_root(tenant: str, tmp_path: Path) -> None:
    root = tmp_path / "workspaces"
    root.mkdir()
    path = workspace_for(root, tenant, "s")
    assert path.parent.parent == root.resolve() and path.is_dir()
    assert workspace_for(root, tenant, "s") == path
    assert path.parent.name not in (".", "..")


def test_distinct_invalid_tenants_get_distinct_directories(tmp_path: Path) -> None:
    dirs = {workspace_for(tmp_path, tenant, "s").parent for tenant in ["a:b", "a@b", "a_b", "a b"]}
    assert len(dirs) == 4


@pytest.fixture
async def stack(pg_server: str, log_dir: Path) -> AsyncIterator[Stack]:
    async with stack_on(pg_server, log_dir, auth_required=True, service_token=SERVICE) as stack:
        await stack.start_api()
        yield stack


@pytest.mark.services
async def test_the_service_token_acts_for_no_tenant_it_names(stack: Stack) -> None:
    """X-Agentlog-Tenant used to pick the service token's tenant; it names none now, valid or
    not (the service token starts sub-agents for their parent's tenant, and does nothing else)."""
    async with httpx.AsyncClient(base_url=stack.api_url or "", timeout=30) as api:
        for tenant in ["x..y", "a:b", "acme"]:
            r = await api.get(
                "/v1/sessions", headers={"Authorization": f"Bearer {SERVICE}", "X-Agentlog-Tenant": tenant}
            )
            assert r.status_code == 403, (tenant, r.text)
            assert r.headers["content-type"].startswith("application/problem+json")
