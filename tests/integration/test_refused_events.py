"""The log's writers checked by its readers (issue 17): an event for a session never started,
or under another tenant than its session's, is refused by every consumer — no turn, no model
call, no row — and every refused or undecodable record is one dead letter naming them all."""

from __future__ import annotations

from pathlib import Path

from eventstore import codec
from eventstore import events as ev
from eventstore.log import KafkaLog, read_partition
from eventstore.models import OFFLINE_MODEL
from processors.run import ROLES
from tests.services import stack_on, wait_until

CONSUMERS = ["model-worker", "projector", "reactor", "subagent-worker", "tool-worker"]


async def test_refused_and_undecodable_records_are_one_dead_letter_each(
    pg_server: str, log_dir: Path
) -> None:
    async with stack_on(pg_server, log_dir, partitions=1) as stack:
        await stack.start(*ROLES)
        kafka = KafkaLog(stack.settings)
        await kafka.start()
        ghost = ev.user_message("ghost", text="who started me?", idempotency_key="g1", tenant_id="a")
        forged = ev.user_message("mine", text="let me in", idempotency_key="f1", tenant_id="b")
        garbage = b"\x00 not an event"
        await kafka.append(ev.session_started("mine", model=OFFLINE_MODEL, tenant_id="a"))
        await kafka.append(ghost)
        await kafka.append(forged)
        await kafka.append_raw(codec.key_for("mine"), garbage, [])
        # The owner's own turn after them: the partition flows, and it is the only model call.
        await kafka.append(ev.user_message("mine", text="hello", idempotency_key="m1", tenant_id="a"))
        await kafka.stop()

        async def all_refused() -> bool:
            rows = await stack.sql("SELECT cardinality(consumers) FROM dead_letters")
            return len(rows) == 3 and all(n == len(CONSUMERS) for (n,) in rows)

        await wait_until(all_refused, within=60)
        await wait_until(lambda: stack.sql("SELECT 1 FROM turns WHERE status = 'completed'"), within=30)
        rows = await stack.sql(
            "SELECT log_offset, record_value, reason, consumers FROM dead_letters ORDER BY log_offset"
        )
        assert [sorted(r[3]) for r in rows] == [CONSUMERS] * 3
        (_, _, never, _), (_, _, tenant, _), (_, value, undecodable, _) = rows
        assert "never started" in never and "'ghost'" in never
        assert "tenant 'b'" in tenant and "tenant 'a' owns" in tenant
        assert value == garbage and "undecodable" in undecodable
        # Published once each on the dead-letter topic, not once per consumer.
        dlq = [r async for r in read_partition(stack.settings, 0, topic=codec.DEAD_LETTER_TOPIC)]
        assert len(dlq) == 3 and garbage in [r.value for r in dlq]
        # Nothing of them anywhere else: no session invented, no turn, no model call.
        assert await stack.sql("SELECT session_id, tenant_id FROM sessions") == [("mine", "a")]
        assert await stack.sql("SELECT count(*) FROM turns") == [(1,)]
        assert await stack.sql(
            "SELECT count(*) FROM events WHERE event_id IN (%s, %s)", ghost.event_id, forged.event_id
        ) == [(0,)]
        assert stack.workers["model"].calls == 1
