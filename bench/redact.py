"""The cost of redacting secrets from one tool result (processors/tools/redact.py), per size and
kind of output; prints one table. Never a test.

    python -m bench.redact [--repeat 5]

plain       log-like lines with hashes and paths, no secret (the common case)
secrets     the same with a token, an AWS key pair and a PEM key every 2 KB
worst       one line of "eyJ" (the JWT plugin's regex is quadratic on it; windows bound it)
"""

from __future__ import annotations

import argparse
import base64
import os
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from processors.tools.redact import redact

SIZES = {"10 KB": 10_000, "1 MB": 1_000_000}
LINE = "2026-12-05T08:00:00Z INFO worker: wrote /workspace/src/app.py sha256 {digest} in 12 ms\n"


def plain(n: int) -> str:
    lines, size, i = [], 0, 0
    while size < n:
        line = LINE.format(digest=f"{i:064x}")
        lines.append(line)
        size += len(line)
        i += 1
    return "".join(lines)[:n]


def with_secrets(n: int) -> str:
    pem = (
        "-----BEGIN PRIVATE KEY-----\n"
        + base64.b64encode(bytes(range(90))).decode()
        + "\n-----END PRIVATE KEY-----\n"
    )
    chunk = (
        f"token ghp_{'a1B2' * 9}\naws_access_key_id = AKIA{'Q7' * 8}\n"
        f"aws_secret_access_key = {'kT9/' * 10}\n{pem}"
    )
    base = plain(n)
    return "".join(base[i : i + 2000] + chunk for i in range(0, n, 2000))[:n]


def worst(n: int) -> str:
    return ("eyJ" * (n // 3 + 1))[:n]


def micros(make: Callable[[int], str], n: int, repeat: int) -> tuple[float, int]:
    """The median µs of redacting one output of `n` characters, and the secrets found."""
    text = make(n)
    times, found = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        found = sum(redact(text).found.values())
        times.append((time.perf_counter() - started) * 1e6)
    return statistics.median(times), found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    table = Table(title=f"redaction per tool result ({os.cpu_count()} CPUs, median of {args.repeat})")
    for column in ("output", "size", "µs", "µs per KB", "secrets"):
        table.add_column(column, justify="right" if column != "output" else "left")
    for name, make in (("plain", plain), ("secrets", with_secrets), ("worst", worst)):
        for label, n in SIZES.items():
            us, found = micros(make, n, 1 if name == "worst" and n > 100_000 else args.repeat)
            table.add_row(name, label, f"{us:,.0f}", f"{us / (n / 1000):,.1f}", str(found))
    Console().print(table)


if __name__ == "__main__":
    main()
