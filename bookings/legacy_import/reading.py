"""Reading the old files safely: size limits, UTF-8 with the line of a bad byte, YAML
through the safe loader only (no tags that build objects, no anchors or aliases) with the
line of every key, CSV rows with their line, and the value rules the old files share.
Pure: no database. Converters raise `Bad` with a message; the parser records it."""

import ast
import csv
import io
import math
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml
from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.services import normalise_username
from bookings.legacy_import.records import Problem

# The old files are small: a config of some kilobytes, a history of some megabytes. Far
# larger files are refused before they are read.
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_CSV_BYTES = 64 * 1024 * 1024
# A maintainer fixes the first ones and runs again; thousands of lines help nobody.
MAX_PROBLEMS = 200
# No number in the old files comes near this; a larger one is a typo or an attack.
MAX_WHOLE = 10**9
MAX_LITERAL_CHARS = 200
NULL_WORDS = ("", "null", "none")


class Bad(ValueError):
    """A value that cannot be used; the message says why."""


class Problems:
    """Collects problems in the order found, up to MAX_PROBLEMS errors."""

    def __init__(self) -> None:
        self.items: list[Problem] = []
        self.dropped = 0

    def error(self, file: str, line: int | None, message: str, *, field: str = "") -> None:
        if sum(problem.is_error for problem in self.items) >= MAX_PROBLEMS:
            self.dropped += 1
            return
        self.items.append(Problem(file=file, line=line, message=message, field=field))

    def warning(self, file: str, line: int | None, message: str, *, field: str = "") -> None:
        self.items.append(Problem(file=file, line=line, message=message, field=field, is_error=False))

    def has_errors(self) -> bool:
        return self.dropped > 0 or any(problem.is_error for problem in self.items)

    def check(self, file: str, line: int | None, convert: Callable, *args, field: str = "", **kwargs):
        """`convert(*args, **kwargs)`, or None with the problem recorded when it is `Bad`."""
        try:
            return convert(*args, **kwargs)
        except Bad as bad:
            self.error(file, line, str(bad), field=field)
            return None

    def final(self) -> tuple[Problem, ...]:
        if self.dropped:
            more = Problem(file="(import)", line=None, message=f"{self.dropped} more error(s) not shown")
            return (*self.items, more)
        return tuple(self.items)


# Files -----------------------------------------------------------------------------------


def read_text(path: Path, problems: Problems, *, limit: int) -> str | None:
    """The file's text (UTF-8, a BOM allowed), or None with the problem recorded."""
    try:
        size = path.stat().st_size
        if size > limit:
            problems.error(
                path.name, None, f"is {size // 1024} KiB, more than the {limit // 1024} KiB allowed"
            )
            return None
        raw = path.read_bytes()
    except OSError as error:
        problems.error(path.name, None, f"cannot be read ({error.strerror or error})")
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        problems.error(
            path.name, line, f"is not UTF-8 text (byte 0x{raw[error.start]:02x}); save it as UTF-8"
        )
        return None


class Mapping(dict):
    """A YAML mapping that remembers the line of each key (1-based)."""

    line: int = 0
    lines: dict

    def line_of(self, key: object) -> int:
        return self.lines.get(key, self.line)


class Sequence(list):
    line: int = 0
    lines: list


def empty_mapping() -> Mapping:
    mapping = Mapping()
    mapping.lines = {}
    return mapping


@dataclass
class _Duplicate:
    key: object
    line: int
    first_line: int


class _LineLoader(yaml.SafeLoader):
    """The safe loader (plain data only: `!!python/object` and friends are refused) that
    also refuses anchors and aliases, which the old files never use and which can blow a
    small file up to gigabytes, and notes keys written twice (the old CLI's appends)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicates: list[_Duplicate] = []

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent) or getattr(self.peek_event(), "anchor", None):
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&name, *name) are not allowed", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> Iterator[Mapping]:
    mapping = Mapping()
    mapping.line, mapping.lines = node.start_mark.line + 1, {}
    yield mapping
    mapping.update(loader.construct_mapping(node, deep=True))
    for key_node, _ in node.value:
        key, line = loader.construct_object(key_node, deep=True), key_node.start_mark.line + 1
        if key in mapping.lines:
            loader.duplicates.append(_Duplicate(key, line, mapping.lines[key]))
            continue
        mapping.lines[key] = line


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> Iterator[Sequence]:
    sequence = Sequence()
    sequence.line = node.start_mark.line + 1
    sequence.lines = [item.start_mark.line + 1 for item in node.value]
    yield sequence
    sequence.extend(loader.construct_sequence(node, deep=True))


_LineLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LineLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def read_yaml(path: Path, problems: Problems, *, required: bool = True) -> Mapping | None:
    """The file's top-level mapping; an empty one for a missing optional or empty file;
    None with the problem recorded when it cannot be used."""
    if not path.is_file():
        if required:
            problems.error(path.name, None, f"file not found in {path.parent}")
            return None
        return empty_mapping()
    text = read_text(path, problems, limit=MAX_YAML_BYTES)
    if text is None:
        return None
    loader = _LineLoader(text)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        problems.error(path.name, mark.line + 1 if mark else None, f"not valid YAML ({problem})")
        return None
    except RecursionError:
        problems.error(path.name, None, "not valid YAML (nested too deeply)")
        return None
    finally:
        loader.dispose()
    for duplicate in loader.duplicates:
        problems.error(
            path.name,
            duplicate.line,
            f"'{duplicate.key}' is written twice (also on line {duplicate.first_line}); keep one",
        )
    if data is None:
        return empty_mapping()
    if not isinstance(data, Mapping):
        problems.error(path.name, 1, "expected a mapping of keys to values at the top level")
        return None
    return data


def read_csv_rows(path: Path, problems: Problems) -> Iterator[tuple[int, list[str]]]:
    """(line, cells) for each row, the header first; stops with a problem recorded at the
    first row the csv module cannot read."""
    text = read_text(path, problems, limit=MAX_CSV_BYTES)
    if text is None:
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            yield reader.line_num, row
    except csv.Error as error:
        problems.error(path.name, reader.line_num, f"cannot be read as CSV ({error})")


# Values ------------------------------------------------------------------------------------


def is_null(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in NULL_WORDS)


def whole_number(value: object, *, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise Bad(f"{what} must be a whole number, not {_shown(value)}")
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        raise Bad(f"{what} must be a whole number, not {_shown(value)}") from None
    if not number.is_finite() or number != number.to_integral_value() or number < minimum:
        raise Bad(f"{what} must be a whole number >= {minimum}, not {_shown(value)}")
    if number > MAX_WHOLE:
        raise Bad(f"{what} is far too large ({_shown(value)})")
    return int(number)


def cpus_number(value: object, *, what: str = "cpus") -> Decimal:
    try:
        number = Decimal(str(value).strip()) if not isinstance(value, bool) else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or number <= 0 or number > MAX_WHOLE:
        number = None
    if number is None or number != number.quantize(Decimal("0.01")):
        raise Bad(f"{what} must be a number above 0 with at most 2 decimals, not {_shown(value)}")
    return number.quantize(Decimal("0.01"))


def moment(text: str, *, what: str) -> datetime:
    """`2023-01-01 13:30:00[.000000]`, in the lab's time zone unless it names an offset."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise Bad(f"{what} {_shown(text)} is not a date and time like 2023-01-01 13:30:00") from None
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed)


def gpu_list(text: str) -> tuple[int, ...]:
    """`"[0, 1]"` -> (0, 1); `null`, empty or `[]` -> (). Read as a literal, never run."""
    if is_null(text):
        return ()
    if len(text) > MAX_LITERAL_CHARS:
        raise Bad(f"gpus is {len(text)} characters long, not a list like [0, 1]")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        raise Bad(f"gpus {_shown(text)} is not a list like [0, 1]") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list | tuple) or not all(_is_index(index) for index in value):
        raise Bad(f"gpus {_shown(text)} must be a list of GPU indices like [0, 1]")
    if len(set(value)) != len(value):
        raise Bad(f"gpus {_shown(text)} names a GPU twice")
    return tuple(sorted(value))


def _is_index(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1000


def account_id(value: object) -> str:
    try:
        return normalise_username(str(value))
    except ValidationError as error:
        raise Bad(f"bad account id {_shown(value)} ({' '.join(error.messages)})") from None


def _shown(value: object) -> str:
    """A value as a message shows it: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


# Safe arithmetic for `shm_rate: ram / (ram + swap_size)` ---------------------------------

_OPERATORS: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


@dataclass
class _Evaluator:
    expression: object
    names: dict[str, float] = field(default_factory=dict)

    def walk(self, node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return self.walk(node.body)
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return float(node.value)
        if isinstance(node, ast.Name):
            return self.name(node.id)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            left, right = self.walk(node.left), self.walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise ValueError("division by zero")
            return _OPERATORS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](self.walk(node.operand))
        raise ValueError(f"'{self.expression}' uses something other than numbers, names and + - * /")

    def name(self, name: str) -> float:
        if name not in self.names:
            raise ValueError(f"unknown name '{name}' (known: {', '.join(sorted(self.names))})")
        return float(self.names[name])


def evaluate_expression(expression: object, names: dict[str, float]) -> float:
    """Evaluates numbers, names from `names`, + - * / and brackets; anything else (calls,
    attributes, other operators) is refused, and so is a result that is not a finite number
    (`1e999`). Never `eval`."""
    value = _evaluate(expression, names)
    if not math.isfinite(value):
        raise ValueError(f"'{expression}' is not a finite number")
    return value


def _evaluate(expression: object, names: dict[str, float]) -> float:
    if isinstance(expression, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(expression, int | float):
        return float(expression)
    text = str(expression).strip()
    if len(text) > MAX_LITERAL_CHARS:
        raise ValueError("the expression is too long")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, RecursionError, MemoryError):
        raise ValueError(f"'{expression}' is not an arithmetic expression") from None
    return _Evaluator(expression, names).walk(tree)
