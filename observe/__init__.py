"""Observability: the metrics each process exports, its registration in the fleet, traces."""
