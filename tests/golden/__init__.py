"""Golden event logs: records as appended by an earlier version, replayed by every later one."""
