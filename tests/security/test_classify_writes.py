"""Commands that write a file named by an operand or an option are never classified read-only
(a write is never run twice, so a wrong "read" would rerun it after a crash)."""

from __future__ import annotations

import pytest

from processors.tools.classify import classify

WRITES_AN_OPERAND = [
    "uniq - out.txt",  # `-` is standard input; out.txt is the output file
    "uniq in.txt out.txt",
    "uniq -c - out.txt",
    "uniq -- in.txt out.txt",
    "uniq -- -in out.txt",
    "uniq -f 1 in.txt",  # an option's value counts as an operand: closed
    "cat in.txt | uniq - out.txt",
    "sort -o out.txt in.txt",
    "sort -uo out.txt in.txt",
    "sort --output=out.txt in.txt",
    "sort --out out.txt in.txt",
    "tee out.txt",
    "cat a | tee -a out.txt",
    "split -l 10 in.txt part-",
    "csplit in.txt /x/",
    "cp a b",
    "mv a b",
    "install a b",
    "dd if=a of=b",
    "ln -s a b",
    "touch a",
    "truncate -s 0 a",
    "shuf -o out.txt in.txt",
    "iconv -o out.txt in.txt",
    "tar -cf out.tar .",
    "gzip a",
    "patch -o out.txt a.txt d.patch",
    "sdiff -o merged.txt a b",
    "find . -fprint out.txt",
]
STILL_READS = ["uniq", "uniq in.txt", "uniq -c in.txt", "uniq -", "cat f | uniq -c", "uniq -- in.txt"]


@pytest.mark.parametrize("command", WRITES_AN_OPERAND)
def test_a_command_that_writes_a_named_file_is_a_write(command: str) -> None:
    assert classify(command) == "write"


@pytest.mark.parametrize("command", STILL_READS)
def test_uniq_with_at_most_one_operand_is_still_a_read(command: str) -> None:
    assert classify(command) == "read"
