"""The console's static bundle (api/ui/static): shipped in the wheel, every module it imports
present, and nothing in it that turns text into markup or code."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

from hatchling.builders.wheel import WheelBuilder

ROOT = Path(__file__).parents[2]
STATIC = ROOT / "api" / "ui" / "static"


def test_the_wheel_ships_every_file_of_the_bundle(tmp_path: Path) -> None:
    [wheel] = WheelBuilder(str(ROOT)).build(directory=str(tmp_path), versions=["standard"])
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("api/ui/static/")}
    assert shipped == {f"api/ui/static/{p.name}" for p in STATIC.iterdir()}
    assert "api/ui/static/index.html" in shipped and "api/ui/static/transcript.js" in shipped


def test_every_import_and_reference_names_a_file_of_the_bundle() -> None:
    names = {p.name for p in STATIC.iterdir()}
    for module in STATIC.glob("*.js"):
        for target in re.findall(r"from '\./([^']+)'", module.read_text()):
            assert target in names, f"{module.name} imports {target}"
    page = (STATIC / "index.html").read_text()
    for target in re.findall(r'(?:src|href)="([^"#:]+)"', page):
        assert target in names, f"index.html refers to {target}"


def test_nothing_in_the_bundle_parses_text_as_markup_or_code() -> None:
    sinks = re.compile(
        r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|javascript:"
    )
    for source in STATIC.iterdir():
        found = sinks.findall(source.read_text())
        assert found == [], f"{source.name}: {found}"
    assert "<script>" not in (STATIC / "index.html").read_text()  # nothing inline: the CSP forbids it
