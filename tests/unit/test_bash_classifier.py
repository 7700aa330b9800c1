"""The Bash classifier fails closed: a command is read-only only when every part of it surely is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processors.tools.bash import Bash
from processors.tools.classify import classify

READ_ONLY = [
    "ls",
    "ls -la",
    "ls -la src/ tests/",
    "ls *.py",
    "cat README.md",
    "head -n 20 main.py",
    "tail -n 50 log.txt",
    "wc -l *.py",
    'grep -rn "def main" .',
    "egrep 'a|b' notes.txt",
    "fgrep -c x f",
    "rg -n --hidden TODO src",
    "find . -name '*.py' -type f",
    "find . -type d -maxdepth 2",
    "pwd",
    "echo hello",
    'echo "hello world"',
    "printf '%s\\n' a b",
    "stat f",
    "file main.py",
    "du -sh .",
    "df -h",
    "which python3",
    "whoami",
    "id",
    "date",
    "date +%s",
    "uname -a",
    "env",
    "printenv PATH",
    "sort names.txt",
    "sort -n -k2 data.tsv",
    "uniq -c sorted.txt",
    "cut -d, -f1 data.csv",
    "tr a-z A-Z < in.txt",
    "diff a.txt b.txt",
    "cmp a.bin b.bin",
    "basename /a/b.py",
    "dirname /a/b.py",
    "realpath x",
    "true",
    "false",
    "test -f setup.py",
    "[ -d src ]",
    "ls | wc -l",
    "cat f | grep x | sort | uniq -c",
    "ls && pwd",
    "ls || echo none",
    "ls; pwd",
    "ls\npwd\n",
    "grep x f 2>/dev/null",
    "grep -q x f > /dev/null 2>&1",
    "ls 2>&1 | head",
    "sed -n '1,20p' main.py",
    "sed -n -e '5p' -e '$p' f",
    "cd src && ls",
    "/bin/ls /workspace",
    "/usr/bin/cat f",
    "ls \\; rm x",
    "echo a\\\nb",
]

WRITES = [
    # git runs programs the workspace's config names (diff.external, core.fsmonitor): never a read.
    "git status",
    "git log --oneline -n 5",
    "git diff HEAD~1 -- src",
    "git show HEAD:README.md",
    "git branch",
    "git branch -a -v",
    "git branch --list 'feature/*'",
    "git rev-parse HEAD",
    "git ls-files",
    "git blame main.py",
    "git --no-pager log -p",
    # A comment can hide a quote, and with it the lines that follow, from a scanner.
    "echo a #'\ntouch pwned\n#'",
    "ls # harmless",
    "echo x >> f",
    "echo x > f",
    "printf x > f",
    "ls >| f",
    "ls &> out.txt",
    "ls 2> err.txt",
    "ls >&out.txt",
    "cat f > /tmp/x",
    "sed -i s/a/b/ f",
    "sed -i.bak 's/a/b/' f",
    "sed --in-place 's/a/b/' f",
    "sed 's/a/b/w out' f",
    "sed -n 1p *",
    "find . -exec rm {} \\;",
    "find . -name '*.tmp' -delete",
    "find . -fprint out",
    "find *",
    "git -c core.pager=x log",
    "git -C /tmp status",
    "git commit -m x",
    "git push",
    "git checkout main",
    "git branch new-feature",
    "git branch -D old",
    "git diff --output=patch.txt",
    "git log --outp x",
    "git diff --ext-diff",
    "git stash",
    "git",
    "$(rm -rf /)",
    "`rm -rf /`",
    "echo $(whoami)",
    "echo `date`",
    "echo $HOME",
    'echo "$HOME"',
    "echo '$(not run)'",
    "npm publish",
    "curl https://example.com",
    "wget https://example.com",
    "cat f | tee g",
    "ls; rm x",
    "ls && rm -rf build",
    "FOO=1 ls",
    "rm -rf x",
    "mv a b",
    "cp a b",
    "touch x",
    "mkdir d",
    "chmod 777 x",
    "ln -s a b",
    "python3 script.py",
    "make",
    "pip install requests",
    "bash -c 'ls'",
    "sh script.sh",
    "eval ls",
    "exec ls",
    "source env.sh",
    ". env.sh",
    "xargs rm",
    "ls | xargs rm",
    "sudo ls",
    "(ls)",
    "{ ls; }",
    "cat <<EOF\nx\nEOF",
    "cat <<< x",
    "cat <> f",
    "diff <(ls) <(ls a)",
    "sort -o out f",
    "sort --output=out f",
    "sort --compress-program=gzip f",
    "uniq in.txt out.txt",
    "env rm x",
    "date -s '2020-01-01'",
    "date --set=now",
    "file -C -m magic",
    "rg --pre cat x",
    "ls &",
    "ls & rm x",
    "ls |& cat",
    "./ls",
    "unknown-tool --flag",
    "awk '{print}' f",
    "dd if=/dev/zero of=f",
    "tar xf a.tar",
    "'ls",
    'echo "abc',
    "ls \\",
    "",
    "   ",
    "ls *; *",
    "for f in *; do cat $f; done",
    "if true; then ls; fi",
    "ls() { rm -rf x; }; ls",
    "time ls",
    "! ls",
]


def test_the_corpus_is_large() -> None:
    assert len(READ_ONLY) >= 40 and len(WRITES) >= 40


@pytest.mark.parametrize("command", READ_ONLY)
def test_read_only_commands_are_read(command: str) -> None:
    assert classify(command) == "read"


@pytest.mark.parametrize("command", WRITES)
def test_other_commands_are_writes(command: str) -> None:
    assert classify(command) == "write"


def test_the_tool_classifies_each_call() -> None:
    bash = Bash()
    assert bash.effect_class({"command": "ls -la"}) == "read"
    assert bash.effect_class({"command": "git push"}) == "write"
    assert bash.effect_class({}) == "write"
    assert bash.effect_class({"command": ["ls"]}) == "write"


@given(st.text())
def test_any_text_is_classified(command: str) -> None:
    assert classify(command) in ("read", "write")


@given(st.text(), st.sampled_from(["$(", "`", "<(", ">("]), st.text())
def test_substitutions_are_always_writes(before: str, marker: str, after: str) -> None:
    assert classify(before + marker + after) == "write"


@given(st.sampled_from(READ_ONLY), st.sampled_from(WRITES[:30]), st.sampled_from(["; ", " && ", " | ", "\n"]))
def test_a_write_anywhere_makes_the_line_a_write(read: str, write: str, joint: str) -> None:
    assert classify(read + joint + write) == "write"
