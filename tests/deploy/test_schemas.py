"""The vendored schemas (deploy/schemas): each file's source is noted, and the CRD converter
(scripts/crd2jsonschema.py) turns OpenAPI's dialect into JSON Schema that is strict."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest

from tests.deploy.manifests import ROOT, SCHEMAS

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "spec": {
        "group": "example.dev",
        "names": {"kind": "Widget"},
        "versions": [
            {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
            {
                "name": "v1",
                "served": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"x-kubernetes-int-or-string": True},
                                    "note": {"type": "string", "nullable": True},
                                    "config": {
                                        "type": "object",
                                        "x-kubernetes-preserve-unknown-fields": True,
                                    },
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                },
                            }
                        },
                    }
                },
            },
        ],
    },
}


def _converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crd2jsonschema", ROOT / "scripts" / "crd2jsonschema.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_vendored_schema_names_its_source_and_licence() -> None:
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    files = sorted(p.relative_to(SCHEMAS).as_posix() for p in SCHEMAS.rglob("*.json"))
    assert files
    for name in files:
        assert f"`{name}`" in readme, f"{name} is not in deploy/schemas/README.md"
        json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    assert "Apache-2.0" in readme


def test_the_converter_keeps_served_versions_and_is_strict() -> None:
    schemas = _converter().schemas(CRD)
    assert set(schemas) == {"example.dev/widget_v1"}
    schema = schemas["example.dev/widget_v1"]
    jsonschema.Draft7Validator.check_schema(schema)
    good: dict[str, Any] = {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": "10Gi", "note": None, "config": {"any": {"thing": 1}}, "labels": {"a": "b"}},
    }
    jsonschema.validate(good, schema)
    jsonschema.validate({**good, "spec": {**good["spec"], "size": 3}}, schema)
    for bad in (
        {**good, "spec": {**good["spec"], "colour": "red"}},  # a field the CRD does not know
        {**good, "spec": {**good["spec"], "size": 1.5}},  # neither an integer nor a string
        {**good, "apiVersion": "example.dev/v0"},
        {**good, "kind": "Gadget"},
        {key: value for key, value in good.items() if key != "metadata"},
        {**good, "spec": {**good["spec"], "labels": {"a": 1}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_the_converter_writes_one_file_per_version(tmp_path: Path) -> None:
    source = tmp_path / "crd.yaml"
    source.write_text(json.dumps(CRD), encoding="utf-8")  # JSON is YAML
    assert _converter().main([str(tmp_path / "out"), str(source)]) == 0
    assert [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "out").rglob("*.json")] == [
        "out/example.dev/widget_v1.json"
    ]
