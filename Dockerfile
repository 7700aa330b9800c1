# agentlog runtime image: `agentlog` CLI (api, workers, migrate) on python:3.11-slim.
# Only the package sources are copied (no .venv, .git or tests), since there is no .dockerignore.

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
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --create-home --uid 10001 --user-group agentlog
COPY --from=build /opt/venv /opt/venv
USER agentlog
WORKDIR /home/agentlog
EXPOSE 8000 9464
CMD ["agentlog", "--help"]
