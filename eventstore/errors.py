"""Errors of the event store, one base and a shallow tree; each says whether a retry can help.

AgentlogError
├── DecodeError        bytes that are not an event we can read (never retriable)
│   └── Shredded       a deleted session's record: its data key is destroyed
├── MasterKeyError     the master key cannot open the stored data keys (never retriable)
├── AppendTimeout      the broker did not acknowledge in time (retriable)
├── RecordTooLarge     an event over the log's record size (never retriable)
├── LogError           any other failure of the log adapter (retriable)
└── StoreError         a failure of the Postgres store (retriable)
"""

from __future__ import annotations


class AgentlogError(Exception):
    """Base of every agentlog error."""

    retriable: bool = False


class DecodeError(AgentlogError):
    """Bytes or a stored row that do not decode to a known event."""

    retriable = False


class Shredded(DecodeError):
    """A record of a deleted session: its data key was destroyed, so it can never be read.
    Consumers pass over it (it is no one's fault), never dead-letter it."""


class MasterKeyError(AgentlogError):
    """The configured master key is not the one that wrapped the stored data keys."""

    retriable = False


class AppendTimeout(AgentlogError):
    """The broker did not acknowledge an append within the configured timeout."""

    retriable = True


class RecordTooLarge(AgentlogError):
    """An event whose record is over the log's maximum request size: no retry can help."""

    retriable = False


class LogError(AgentlogError):
    """The Kafka adapter failed; the vendor error is chained."""

    retriable = True


class StoreError(AgentlogError):
    """The Postgres store failed; the vendor error is chained."""

    retriable = True
