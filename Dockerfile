# agentlog runtime image: one image for every role, `agentlog worker reactor|model|tools|subagents|projector`,
# `agentlog api` and `agentlog migrate`, on python:3.11-slim.
# Only the package sources are copied (no .venv, .git or tests), since there is no .dockerignore.
#
# The tool executors' Bash tool runs each command in a bubblewrap sandbox, installed here. As a
# non-root user bwrap needs user namespaces, which a container's default seccomp and AppArmor
# profiles and its masked /proc forbid: docs/operations.md ("The Bash sandbox in a container")
# says what the tools container must be allowed (docker-compose.yml and deploy/k8s grant it).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY agentlog ./agentlog
COPY api ./api
COPY eventstore ./eventstore
COPY observe ./observe
COPY processors ./processors
RUN /opt/venv/bin/pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENTLOG_WORKSPACE_ROOT=/var/lib/agentlog/workspaces
# bubblewrap: the Bash sandbox; util-linux: prlimit (its limits) and setpriv. What else the
# sandboxed commands may use is this image's /usr, read-only: add tools here (git, ...).
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap util-linux ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && bwrap --version
# A fixed numeric uid, so that Kubernetes' runAsNonRoot can check it; the workspace root is
# its own (a fresh named volume mounted there copies the ownership).
RUN groupadd --gid 10001 agentlog \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin agentlog \
    && mkdir -p /var/lib/agentlog/workspaces \
    && chown -R 10001:10001 /var/lib/agentlog
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /home/agentlog
# 8000: the api; 9464: every process's /metrics, /healthz and /readyz.
EXPOSE 8000 9464
CMD ["agentlog", "--help"]
