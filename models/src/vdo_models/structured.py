"""Reading a model's reply as one JSON document that matches a schema.

A reply may wrap its JSON in a ```json fence or in prose; the first JSON object found is used.
What is wrong with it is said briefly and precisely (where, and what), so that it can be sent
back to the model in a repair prompt.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from vdo_models.interface import JSONSchema

MAX_PROBLEMS = 5
_FENCE = re.compile(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_MAX_BRACES = 20  # '{' positions tried when the object sits in prose
_SHORT = 60  # longest value quoted in a message


class NoDocumentError(ValueError):
    """The reply holds no JSON object."""


def parse_document(text: str, schema: JSONSchema) -> tuple[dict[str, Any], None] | tuple[None, str]:
    """``(document, None)`` when `text` holds a JSON object valid under `schema`; otherwise
    ``(None, reason)``."""
    try:
        document = find_json_object(text)
    except NoDocumentError as exc:
        return None, str(exc)
    problems = schema_problems(document, schema)
    if problems:
        return None, "; ".join(problems)
    return document, None


def find_json_object(text: str) -> dict[str, Any]:
    """The JSON object in `text`: all of it, a fenced block, or the first object in prose."""
    error: json.JSONDecodeError | None = None
    found_other = ""
    for candidate in [text.strip(), *(m.group(1).strip() for m in _FENCE.finditer(text))]:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError as exc:
            if candidate.startswith("{"):
                error = error or exc
            continue
        if isinstance(value, dict):
            return value
        found_other = found_other or _json_type(value)
    decoder = json.JSONDecoder()
    for i, match in enumerate(re.finditer(r"\{", text)):
        if i == _MAX_BRACES:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError as exc:
            error = error or exc
            continue
        if isinstance(value, dict):
            return value
    if error is not None:
        raise NoDocumentError(f"the reply is not valid JSON: {error}")
    if found_other:
        raise NoDocumentError(f"the reply is JSON but {found_other}, not an object")
    raise NoDocumentError("the reply contains no JSON object")


def schema_problems(document: Any, schema: JSONSchema, limit: int = MAX_PROBLEMS) -> list[str]:
    """What makes `document` invalid under `schema` (Draft 2020-12), one line per problem, at
    most `limit` of them; empty when it is valid."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.path])
    problems = [_describe(e) for e in errors]
    if len(problems) > limit:
        problems = [*problems[:limit], f"and {len(problems) - limit} more problems"]
    return problems


def _describe(error: ValidationError) -> str:
    if error.validator in ("oneOf", "anyOf") and error.context:
        return _describe_alternatives(error)
    return f"{_path(error.absolute_path)}: {_message(error)}"


def _describe_alternatives(error: ValidationError) -> str:
    """For a value matching none of several shapes, the problems with the shape it was meant
    to have: the one whose ``const``/``enum`` discriminators it satisfies (and of those, the
    nearest); when it satisfies none, which discriminator values are allowed."""
    by_branch: dict[int, list[ValidationError]] = defaultdict(list)
    for sub in error.context or []:
        by_branch[int(sub.relative_schema_path[0])].append(sub)
    meant = [
        errs
        for errs in by_branch.values()
        if not any(e.validator in ("const", "enum") for e in errs)
    ]
    if meant:
        return "; ".join(_describe(e) for e in min(meant, key=len))
    # Every shape's discriminator failed: name the values allowed where it is most often.
    discriminators = [
        e for errs in by_branch.values() for e in errs if e.validator in ("const", "enum")
    ]
    where = Counter(tuple(e.absolute_path) for e in discriminators).most_common(1)[0][0]
    allowed: list[Any] = []
    for e in discriminators:
        if tuple(e.absolute_path) == where:
            value: Any = e.validator_value
            values = list(value) if e.validator == "enum" else [value]
            allowed += [v for v in values if v not in allowed]
    shapes = len(by_branch)
    return (
        f"{_path(where)}: must be one of {', '.join(_quote(v) for v in allowed)} "
        f"(it matches none of the {shapes} allowed shapes)"
    )


def _message(error: ValidationError) -> str:
    """jsonschema's message, with a long offending value shortened."""
    message = error.message
    shown = repr(error.instance)
    if len(shown) > _SHORT and shown in message:
        message = message.replace(shown, _quote(error.instance))
    return message


def _quote(value: Any) -> str:
    shown = json.dumps(value, ensure_ascii=False)
    return shown if len(shown) <= _SHORT else shown[: _SHORT - 4] + "…" + shown[-3:]


def _path(parts: Iterable[Any]) -> str:
    out = "$"
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(part)):
            out += f".{part}"
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"
