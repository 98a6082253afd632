"""What each AI phase must answer: the JSON schemas replies are validated against.

These documents are also the contract between phases: the builder reads the plan, the sandbox
reads the plan's run command and ready check and the tester's command.
"""

from __future__ import annotations

from typing import Any

JSONSchema = dict[str, Any]

_COMMAND: JSONSchema = {
    "type": "array",
    "items": {"type": "string", "minLength": 1, "maxLength": 1000},
    "minItems": 1,
    "maxItems": 64,
}

READY_CHECK: JSONSchema = {
    "description": (
        "How to tell the started program is up: a TCP port on 127.0.0.1 that answers, a smoke "
        "command that exits 0 while it runs, a process that stays up for some seconds, or a "
        "line of output it prints."
    ),
    "oneOf": [
        {
            "type": "object",
            "properties": {
                "kind": {"const": "port"},
                "port": {"type": "integer", "minimum": 1024, "maximum": 65535},
            },
            "required": ["kind", "port"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {"kind": {"const": "command"}, "command": _COMMAND},
            "required": ["kind", "command"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "kind": {"const": "stays_up"},
                "seconds": {"type": "number", "minimum": 0.5, "maximum": 60},
            },
            "required": ["kind", "seconds"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "kind": {"const": "output"},
                "text": {"type": "string", "minLength": 1, "maxLength": 200},
            },
            "required": ["kind", "text"],
            "additionalProperties": False,
        },
    ],
}

PLAN: JSONSchema = {
    "type": "object",
    "properties": {
        "summary": {"type": "string", "minLength": 1, "maxLength": 4000},
        "runtime": {"type": "string", "enum": ["python3"]},
        "files": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 255},
            "minItems": 1,
            "maxItems": 200,
        },
        "dependencies": {
            "description": "PyPI requirements (as in requirements.txt) the program and tests need",
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "maxItems": 50,
        },
        "steps": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 2000},
            "minItems": 1,
            "maxItems": 50,
        },
        "test_strategy": {"type": "string", "minLength": 1, "maxLength": 4000},
        "run_command": _COMMAND,
        "ready_check": READY_CHECK,
    },
    "required": [
        "summary",
        "runtime",
        "files",
        "dependencies",
        "steps",
        "test_strategy",
        "run_command",
        "ready_check",
    ],
    "additionalProperties": False,
}

_FILES: JSONSchema = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "path": {"type": "string", "minLength": 1, "maxLength": 255},
            "content": {"type": "string"},
        },
        "required": ["path", "content"],
        "additionalProperties": False,
    },
    "minItems": 1,
}

BUILD: JSONSchema = {
    "type": "object",
    "properties": {
        "files": _FILES,
        "notes": {"type": "string", "maxLength": 4000},
    },
    "required": ["files", "notes"],
    "additionalProperties": False,
}

TESTS: JSONSchema = {
    "type": "object",
    "properties": {
        "files": _FILES,
        "command": _COMMAND,
        "notes": {"type": "string", "maxLength": 4000},
    },
    "required": ["files", "command", "notes"],
    "additionalProperties": False,
}

REVIEW: JSONSchema = {
    "type": "object",
    "properties": {
        "verdict": {"type": "string", "enum": ["approve", "request_changes"]},
        "summary": {"type": "string", "minLength": 1, "maxLength": 4000},
        "comments": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "path": {"type": "string", "maxLength": 255},
                    "comment": {"type": "string", "minLength": 1, "maxLength": 4000},
                },
                "required": ["path", "comment"],
                "additionalProperties": False,
            },
            "maxItems": 100,
        },
    },
    "required": ["verdict", "summary", "comments"],
    "additionalProperties": False,
}

SCHEMAS: dict[str, JSONSchema] = {
    "planner": PLAN,
    "builder": BUILD,
    "tester": TESTS,
    "reviewer": REVIEW,
}
