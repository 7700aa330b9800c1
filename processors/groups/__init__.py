"""How a worker role gets its partitions: a consumer group (faust-streaming) or all of them by hand."""

from processors.groups.consumer import GroupConsumer, instance_id
from processors.groups.delivery import Delivery, GroupStopped, Record
from processors.groups.manual import ManualConsumer

__all__ = ["Delivery", "GroupConsumer", "GroupStopped", "ManualConsumer", "Record", "instance_id"]
