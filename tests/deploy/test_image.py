"""The image (Dockerfile), read statically since no Docker engine runs here: it installs
bubblewrap for the Bash sandbox, ends as a fixed non-root user (the uid the manifests' pods
run as), and serves every role through the `agentlog` command."""

from __future__ import annotations

import re

from tests.deploy.manifests import DOCKERFILE


def _final_stage() -> list[str]:
    """The Dockerfile's last stage, one instruction a line (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    starts = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    assert starts, "no FROM"
    return lines[starts[-1] :]


def test_the_image_installs_bubblewrap() -> None:
    runs = [line for line in _final_stage() if line.upper().startswith("RUN ")]
    assert any(re.search(r"apt-get install\b.*\bbubblewrap\b", run) for run in runs), runs
    assert any("bwrap --version" in run for run in runs), "the build checks that bwrap runs"


def test_the_image_ends_as_a_fixed_non_root_user() -> None:
    users = [line.split(None, 1)[1] for line in _final_stage() if line.upper().startswith("USER ")]
    assert users, "no USER: the image would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) != 0, "numeric, so that Kubernetes' runAsNonRoot can check it"
    assert not group or int(group) != 0
    # The pods run as the same uid (deploy/k8s/base/pod-defaults.yaml).
    from tests.deploy.manifests import K8S

    assert f"runAsUser: {user}" in (K8S / "base" / "pod-defaults.yaml").read_text(encoding="utf-8")


def test_the_image_serves_every_role_through_the_agentlog_command() -> None:
    stage = _final_stage()
    assert any(line.startswith("ENV ") and "PATH=/opt/venv/bin:" in line for line in stage)
    assert any(line.startswith("COPY --from=build /opt/venv") for line in stage)
    cmd = [line for line in stage if line.upper().startswith("CMD ")]
    assert cmd and '"agentlog"' in cmd[-1]


def test_every_setting_the_image_sets_is_one_agentlog_reads() -> None:
    from tests.deploy.manifests import settings_variables

    envs = " ".join(line for line in _final_stage() if line.startswith("ENV "))
    names = set(re.findall(r"\b(AGENTLOG_[A-Z0-9_]+)=", envs))
    assert names == {"AGENTLOG_WORKSPACE_ROOT"}
    assert names <= settings_variables()
