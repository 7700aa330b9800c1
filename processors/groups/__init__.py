"""Consumer groups for the worker roles: one faust-streaming app per role, offsets kept by the worker."""

from processors.groups.consumer import GroupConsumer, GroupStopped, Record, instance_id

__all__ = ["GroupConsumer", "GroupStopped", "Record", "instance_id"]
