"""Turn CustomResourceDefinitions into JSON Schema files, one per served version, for
check-jsonschema (deploy/schemas/README.md says where each CRD came from).

    python scripts/crd2jsonschema.py deploy/schemas/crds CRD.yaml [CRD.yaml ...]

writes OUT/<group>/<kind>_<version>.json (lower-case kind). The CRD's openAPIV3Schema is
OpenAPI's dialect of JSON Schema; what differs is translated:
- `nullable: true` admits null beside the type;
- `x-kubernetes-int-or-string: true` is an integer or a string;
- strict: an object with `properties` and neither `additionalProperties` nor
  `x-kubernetes-preserve-unknown-fields` admits no other keys (the API server prunes them
  silently, so a misspelt field would be lost without a word);
- `apiVersion` and `kind` are required and fixed, and `metadata` is an object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

DRAFT = "http://json-schema.org/draft-07/schema#"


def translate(node: Any) -> Any:
    """The JSON Schema of one OpenAPI v3 schema node (recursively)."""
    if isinstance(node, list):
        return [translate(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: translate(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = translate(value)
        else:
            out[key] = value
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def schemas(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each served version's JSON Schema, by `<group>/<kind>_<version>`."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    found: dict[str, dict[str, Any]] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = translate(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = DRAFT
        schema["title"] = f"{kind} {group}/{version['name']}"
        properties = schema.setdefault("properties", {})
        properties["apiVersion"] = {"type": "string", "enum": [f"{group}/{version['name']}"]}
        properties["kind"] = {"type": "string", "enum": [kind]}
        properties["metadata"] = {"type": "object"}
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        found[f"{group}/{kind.lower()}_{version['name']}"] = schema
    return found


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    yaml = YAML(typ="safe", pure=True)
    for source in argv[1:]:
        for crd in yaml.load_all(Path(source).read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schemas(crd).items():
                path = out / f"{name}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
                print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
