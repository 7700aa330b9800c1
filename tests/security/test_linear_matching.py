"""Our own regular expressions over what a model or a user writes match in linear time: a long
run of spaces in a `sed` script (the Bash classifier, on the tool executor's event loop) or in a
`call` line (the offline model) is answered, not matched for hours."""

from __future__ import annotations

from processors.model.offline import answer
from processors.model.port import ModelRequest
from processors.tools.classify import classify

SPACES = " " * 200_000  # cubic (classifier) or quadratic (offline model) matching never ends


def test_a_sed_script_of_spaces_is_classified() -> None:
    assert classify(f"sed -n '{SPACES}x' f") == "write"
    assert classify(f"sed -n '{SPACES}1,20p{SPACES}' f") == "read"
    assert classify("sed -n ' 1 , 20 p ' f") == "read"


def test_a_call_line_of_spaces_is_answered() -> None:
    request = ModelRequest(
        model="agentlog-offline-1",
        messages=[{"role": "user", "content": f"call Echo {SPACES}y{SPACES}z"}],
    )
    (text,) = answer(request).content
    assert text["text"].startswith("I could not read your call: line 1: input is not JSON")
    spaced = ModelRequest(
        model="agentlog-offline-1",
        messages=[{"role": "user", "content": f'{SPACES}call Echo {SPACES}{{"text": "hi"}}{SPACES}'}],
    )
    response = answer(spaced)
    assert response.stop_reason == "tool_use"
    assert response.content[1]["name"] == "Echo" and response.content[1]["input"] == {"text": "hi"}
