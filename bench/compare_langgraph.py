"""bench.compare's anchor: the same turns through LangGraph in this process, its checkpoints in
Postgres (`AsyncPostgresSaver` over a connection pool), the model a node that answers after
the same fixed latency as agentlog's offline model; with tools, a `ToolNode` running Echo.

LangGraph is the `compare` extra (never a runtime dependency): imported when a run starts.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import replace
from typing import Any, Literal

import psutil

from bench.procstat import Watched
from bench.workload import Run, Workload, drive, measured

POOL = 20  # Postgres connections the saver shares among the sessions
Durability = Literal["sync", "async", "exit"]


def _graph(work: Workload) -> Any:
    """model -> (tools -> model)* -> end, the model faked by a node that sleeps L and answers."""
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.tools import tool
    from langgraph.graph import END, START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition

    @tool("Echo")
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    latency_s = work.latency_ms / 1000

    async def model(state: MessagesState) -> dict[str, list[AIMessage]]:
        if latency_s:
            await asyncio.sleep(latency_s)
        last = state["messages"][-1]
        if work.tools and isinstance(last, HumanMessage):
            call = {
                "name": "Echo",
                "args": {"text": str(last.content)},
                "id": f"call-{len(state['messages'])}",
            }
            return {"messages": [AIMessage(content="", tool_calls=[call])]}
        return {"messages": [AIMessage(content=f"offline reply to: {str(last.content)[:200]}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    if work.tools:
        builder.add_node("tools", ToolNode([echo]))
        builder.add_conditional_edges("model", tools_condition)
        builder.add_edge("tools", "model")
    else:
        builder.add_edge("model", END)
    return builder


async def _run(
    database_url: str, work: Workload, durability: Durability, watched: list[Watched], light_sessions: int
) -> list[Run]:
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(database_url, max_size=POOL, kwargs=kwargs, open=False) as pool:
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        graph = _graph(work).compile(checkpointer=saver)

        async def turn(sid: str, n: int) -> None:
            config = {"configurable": {"thread_id": sid}}
            message = HumanMessage(content=work.content(sid, n))
            out = await graph.ainvoke({"messages": [message]}, config, durability=durability)
            if not out["messages"][-1].content:
                raise RuntimeError(f"LangGraph turn {n} of {sid} ended without an answer")

        await drive(turn, min(work.sessions, 10), 1, "warm")
        runs = [await measured("LangGraph", turn, work, watched, database_url, "s")]
        if 0 < light_sessions < work.sessions:
            light = replace(work, sessions=light_sessions)
            runs.append(await measured("LangGraph", turn, light, watched, database_url, "l"))
    return runs


def run(
    database_url: str,
    work: Workload,
    postgres_pid: int,
    durability: Durability = "sync",
    light_sessions: int = 10,
) -> list[Run]:
    """The workload through LangGraph in this process, then with `light_sessions` sessions (if
    fewer); CPU counted for this process and Postgres."""
    watched = [Watched("langgraph", os.getpid()), Watched("postgres", postgres_pid, children=True)]
    psutil.Process().cpu_times()  # fail here, not mid-run, if /proc cannot be read
    return asyncio.run(_run(database_url, work, durability, watched, light_sessions))
