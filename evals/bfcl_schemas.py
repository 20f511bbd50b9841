"""JSON schemas from real function specs: the BFCL function-calling set (PyPI `bfcl-eval`).

BFCL writes parameters in a Python-flavoured dialect of JSON Schema ("dict",
"float", "tuple", "any", bare "default"s); `to_json_schema` maps it to standard
JSON Schema so xgrammar and `jsonschema` read the same thing. The extracted set
is committed as tests/data/bfcl_schemas.json (the tests must not need the
package); regenerate it with

    pip install --no-deps bfcl-eval
    python -m evals.bfcl_schemas --out tests/data/bfcl_schemas.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

SOURCE_FILE = "data/BFCL_v4_simple_python.json"   # one function per question
TYPE_MAP = {"dict": "object", "float": "number", "tuple": "array", "list": "array",
            "int": "integer", "str": "string", "bool": "boolean"}


def to_json_schema(p: dict) -> dict:
    """One BFCL parameter spec -> standard JSON Schema (descriptions and enums kept)."""
    out: dict = {}
    t = p.get("type")
    if t == "any" or t is None:
        pass
    else:
        out["type"] = TYPE_MAP.get(t, t)
    for key in ("description", "enum", "minimum", "maximum"):
        if key in p:
            out[key] = p[key]
    if "properties" in p:
        out["properties"] = {k: to_json_schema(v) for k, v in p["properties"].items()}
        req = [r for r in p.get("required", []) if r in p["properties"]]
        if req:
            out["required"] = req
    if "items" in p:
        out["items"] = to_json_schema(p["items"])
    return out


def load_cases(limit: int) -> list[dict]:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the PyPI package bfcl-eval: pip install --no-deps bfcl-eval")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    cases = []
    for line in path.read_text().splitlines():
        item = json.loads(line)
        fn = item["function"][0]
        cases.append({"id": item["id"], "name": fn["name"], "question": item["question"][0][0]["content"],
                      "schema": to_json_schema(fn["parameters"])})
        if len(cases) >= limit:
            break
    return cases


def _version() -> str:
    from importlib.metadata import version
    return version("bfcl-eval")


def write(out: str, limit: int) -> None:
    cases = load_cases(limit)
    doc = {"source": f"PyPI bfcl-eval {_version()}, bfcl_eval/{SOURCE_FILE} (Apache-2.0), "
                     "parameters converted by evals/bfcl_schemas.py",
           "cases": cases}
    Path(out).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} schemas to {out}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="tests/data/bfcl_schemas.json")
    ap.add_argument("--limit", type=int, default=60)
    args = ap.parse_args()
    write(args.out, args.limit)
