"""GrammarSpec: what a request asked to constrain, in one canonical, hashable form.

SamplingParams carries structured-output requests in OpenAI's shape
(`response_format`) plus `regex=`, `ebnf=` and `structural_tag=`; this module
turns them into one `GrammarSpec` whose `key` is the compile-cache key, and
enforces the size / nesting limits before anything reaches the compiler. It
does not import xgrammar, so SamplingParams can validate cheaply.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

MAX_SPEC_CHARS = 64 * 1024       # schema / regex / grammar text; bigger ones are refused
MAX_SCHEMA_DEPTH = 32            # nesting of dicts/lists inside a JSON schema
REASONING_PARSERS = ("deepseek_r1", "qwen3")
KINDS = ("json_object", "json_schema", "regex", "ebnf", "structural_tag")


@dataclass(frozen=True, slots=True)
class GrammarSpec:
    kind: str                    # one of KINDS
    source: str                  # canonical text: compact JSON for schemas, the pattern / grammar otherwise
    reasoning: str | None = None  # reasoning parser name: the grammar starts after `</think>`

    @property
    def key(self) -> tuple[str, str, str | None]:
        return (self.kind, self.source, self.reasoning)


def _depth(obj: Any, limit: int, level: int = 0) -> int:
    if level > limit:
        return level
    if isinstance(obj, dict):
        return max([_depth(v, limit, level + 1) for v in obj.values()], default=level + 1)
    if isinstance(obj, list):
        return max([_depth(v, limit, level + 1) for v in obj], default=level + 1)
    return level


def canonical_json(obj: Any, field: str) -> str:
    """Compact JSON text of `obj` (whitespace-insensitive cache key) after the size and nesting limits. Raises ValueError naming `field`."""
    if isinstance(obj, str):
        if len(obj) > MAX_SPEC_CHARS:
            raise ValueError(f"{field} is {len(obj)} characters; the limit is {MAX_SPEC_CHARS}")
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise ValueError(f"{field} is not valid JSON: {e}") from None
    if not isinstance(obj, (dict, bool)):
        raise ValueError(f"{field} must be a JSON object, got {type(obj).__name__}")
    depth = _depth(obj, MAX_SCHEMA_DEPTH)
    if depth > MAX_SCHEMA_DEPTH:
        raise ValueError(f"{field} nests deeper than {MAX_SCHEMA_DEPTH} levels")
    # key order is kept: xgrammar emits object properties in the schema's declared order
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if len(text) > MAX_SPEC_CHARS:
        raise ValueError(f"{field} is {len(text)} characters of JSON; the limit is {MAX_SPEC_CHARS}")
    return text


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string")
    if len(value) > MAX_SPEC_CHARS:
        raise ValueError(f"{field} is {len(value)} characters; the limit is {MAX_SPEC_CHARS}")
    return value


def spec_from_fields(response_format: dict | None, regex: str | None, ebnf: str | None,
                     structural_tag: dict | str | None, reasoning_parser: str | None) -> GrammarSpec | None:
    """The one GrammarSpec a request asks for, or None for unconstrained text.

    Raises ValueError naming the field for a malformed request, two grammars at
    once, an unknown reasoning parser, or a spec over the limits.
    """
    if reasoning_parser is not None and reasoning_parser not in REASONING_PARSERS:
        raise ValueError(f"reasoning_parser must be one of {REASONING_PARSERS} or None, "
                         f"got {reasoning_parser!r}")
    specs: list[tuple[str, str]] = []
    if response_format is not None:
        kind = _response_format_kind(response_format)
        if kind == "json_object":
            specs.append(("json_object", ""))
        elif kind == "json_schema":
            js = response_format.get("json_schema")
            if not isinstance(js, dict):
                raise ValueError("response_format.json_schema must be an object with 'name' and 'schema'")
            if "name" in js and not isinstance(js["name"], str):
                raise ValueError("response_format.json_schema.name must be a string")
            schema = js.get("schema", {})   # OpenAI: schema is optional (any JSON object)
            specs.append(("json_schema", canonical_json(schema, "response_format.json_schema.schema")))
    if regex is not None:
        specs.append(("regex", _text(regex, "regex")))
    if ebnf is not None:
        specs.append(("ebnf", _text(ebnf, "ebnf")))
    if structural_tag is not None:
        specs.append(("structural_tag", canonical_json(structural_tag, "structural_tag")))
    if len(specs) > 1:
        raise ValueError("give at most one of response_format (json), regex, ebnf and structural_tag; "
                         f"got {[k for k, _ in specs]}")
    if not specs:
        # a reasoning parser alone still needs no grammar: the text is split after generation
        return None
    kind, source = specs[0]
    return GrammarSpec(kind, source, reasoning_parser)


def _response_format_kind(rf: Any) -> str | None:
    if not isinstance(rf, dict) or "type" not in rf:
        raise ValueError("response_format must be an object like {'type': 'json_object'}")
    kind = rf["type"]
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise ValueError(f"response_format.type must be 'text', 'json_object' or 'json_schema', got {kind!r}")
    return kind
