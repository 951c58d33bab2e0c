"""The knowledge-base records every stage shares, and a JSON Lines reader with precise errors.

A *passage* is one retrievable unit of the knowledge base. A *question* is labelled in-knowledge
(``ik``: some passage holds its answer) or out-of-knowledge (``ook``), with a ``kind`` that says
why (``in_knowledge``, ``off_topic``, ``uncovered``, ``false_premise``, ``unknowable``, ...).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from halluguard.errors import HalluguardError

LABELS = ("ik", "ook")


@dataclass
class Passage:
    id: str
    text: str
    title: str = ""
    group: str = ""
    """Split unit: passages of one group (article, handbook section) stay on one side of a split."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Question:
    id: str
    question: str
    label: Optional[str] = None  # "ik", "ook", or None when the source does not say
    kind: str = ""
    answers: list[str] = field(default_factory=list)
    passage_id: Optional[str] = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Source-specific extras, e.g. SQuAD 2.0 ``plausible_answers`` or HaluEval ``hallucinated_answer``."""

    def to_dict(self) -> dict:
        return asdict(self)


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield ``(line_number, object)``; blank lines are skipped, anything else must be a JSON object."""
    path = Path(path)
    if not path.exists():
        raise HalluguardError(f"file not found: {path}")
    if not path.is_file():
        raise HalluguardError(f"expected a file, found a folder: {path}")
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HalluguardError(f"{path}:{lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(obj, dict):
                raise HalluguardError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def read_json(path: Path, expected: str) -> Any:
    """One JSON document; errors name the file (and line), and say which format was ``expected``."""
    path = Path(path)
    if not path.exists():
        raise HalluguardError(f"file not found: {path}")
    if not path.is_file():
        raise HalluguardError(f"expected a file, found a folder: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except UnicodeDecodeError as exc:
        raise HalluguardError(f"{path}: not UTF-8 text (byte {exc.start}); {expected}") from None
    except json.JSONDecodeError as exc:
        raise HalluguardError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}); "
                              f"{expected}") from None


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def read_json_list(path: Path, key: str, expected: str) -> list:
    """The list under ``key`` of a JSON document that must be an object (SQuAD's ``data``,
    SelfAware's ``example``); anything else is an error naming the file and the expected format."""
    data = read_json(path, expected)
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        got = (f"an object with keys {', '.join(map(str, data))}" if isinstance(data, dict)
               else f"a JSON {json_type(data)}")
        raise HalluguardError(f"{path}: {expected}; got {got}")
    return items


def require_str(obj: dict, key: str, where: str, *, allow_empty: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise HalluguardError(f"{where}: field '{key}' must be a string, got {_describe(value)}")
    if not allow_empty and not value.strip():
        raise HalluguardError(f"{where}: field '{key}' is empty")
    return value


def _describe(value: Any) -> str:
    return "nothing (missing)" if value is None else f"{type(value).__name__} {value!r:.40}"


def check_unique_ids(items, path: Path, what: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.id in seen:
            raise HalluguardError(f"{path}: duplicate {what} id '{item.id}' (items {seen[item.id] + 1} and {i + 1})")
        seen[item.id] = i
