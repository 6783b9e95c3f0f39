"""The code the offline model writes: a function for a name it knows (multiply, add, reverse,
clamp, ...), a test that checks it, and the exact `edit_file` replacements that add them to a
file it has read, keeping every line that is already there.

Threads: any (pure functions; the operation table is an immutable tuple). State: none.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from providers.offline_text import FuncSpec


@dataclass(frozen=True)
class Op:
    words: tuple[str, ...]          # a word of the function's name that selects it
    params: tuple[str, ...]         # the parameters it takes when the text names none
    body: str                       # the body, with {0}, {1}, ... for the parameters
    doc: str
    fn: Callable[..., Any]          # the same computation, for the test's expected values
    samples: tuple[tuple[Any, ...], ...]


def _op(words: str, params: str, body: str, doc: str, fn: Callable[..., Any],
        *samples: tuple[Any, ...]) -> Op:
    return Op(tuple(words.split()), tuple(params.split()), body, doc, fn, samples)


OPS: tuple[Op, ...] = (
    _op("multiply mul product times", "a b", "return {0} * {1}", "{0} multiplied by {1}.",
        lambda a, b: a * b, (3, 4), (-2, 5)),
    _op("add plus sum", "a b", "return {0} + {1}", "The sum of {0} and {1}.",
        lambda a, b: a + b, (2, 3), (-1, 1)),
    _op("sum total", "values", "return sum({0})", "The sum of the values.", sum,
        ([1, 2, 3],), ([],)),
    _op("subtract sub minus difference", "a b", "return {0} - {1}", "{0} minus {1}.",
        lambda a, b: a - b, (7, 4), (1, 3)),
    _op("divide div quotient", "a b", "return {0} / {1}", "{0} divided by {1}.",
        lambda a, b: a / b, (6, 3), (7, 2)),
    _op("power pow", "base exponent", "return {0} ** {1}", "{0} raised to {1}.",
        lambda a, b: a ** b, (2, 10), (3, 0)),
    _op("mod modulo remainder", "a b", "return {0} % {1}", "The remainder of {0} by {1}.",
        lambda a, b: a % b, (7, 3), (9, 3)),
    _op("max maximum larger largest", "a b", "return max({0}, {1})", "The larger of {0} and {1}.",
        max, (3, 8), (-1, -5)),
    _op("min minimum smaller smallest", "a b", "return min({0}, {1})",
        "The smaller of {0} and {1}.", min, (3, 8), (-1, -5)),
    _op("average mean avg", "values", "return sum({0}) / len({0})", "The mean of the values.",
        lambda v: sum(v) / len(v), ([2, 4, 6],), ([5],)),
    _op("square squared", "x", "return {0} * {0}", "{0} squared.", lambda x: x * x, (4,), (-3,)),
    _op("cube cubed", "x", "return {0} ** 3", "{0} cubed.", lambda x: x ** 3, (2,), (-3,)),
    _op("double twice", "x", "return {0} * 2", "Twice {0}.", lambda x: x * 2, (4,), (-1,)),
    _op("half halve", "x", "return {0} / 2", "Half of {0}.", lambda x: x / 2, (8,), (3,)),
    _op("negate neg opposite", "x", "return -{0}", "{0} with its sign flipped.",
        lambda x: -x, (4,), (-2,)),
    _op("abs absolute magnitude", "x", "return abs({0})", "The absolute value of {0}.",
        abs, (-4,), (3,)),
    _op("increment inc succ", "x", "return {0} + 1", "{0} plus one.", lambda x: x + 1, (4,), (-1,)),
    _op("decrement dec pred", "x", "return {0} - 1", "{0} minus one.", lambda x: x - 1, (4,), (0,)),
    _op("even", "n", "return {0} % 2 == 0", "Whether {0} is even.",
        lambda n: n % 2 == 0, (4,), (7,)),
    _op("odd", "n", "return {0} % 2 == 1", "Whether {0} is odd.", lambda n: n % 2 == 1, (4,), (7,)),
    _op("positive", "x", "return {0} > 0", "Whether {0} is above zero.",
        lambda x: x > 0, (3,), (-2,)),
    _op("negative", "x", "return {0} < 0", "Whether {0} is below zero.",
        lambda x: x < 0, (3,), (-2,)),
    _op("factorial fact", "n",
        "result = 1\nfor i in range(2, {0} + 1):\n    result *= i\nreturn result",
        "{0}! (1 for 0 and 1).", lambda n: __import__("math").factorial(n), (5,), (0,)),
    _op("fibonacci fib", "n", "a, b = 0, 1\nfor _ in range({0}):\n    a, b = b, a + b\nreturn a",
        "The {0}th Fibonacci number (fib(0) is 0).",
        lambda n: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34, 55][n], (10,), (1,)),
    _op("clamp clip bound", "value low high", "return min(max({0}, {1}), {2})",
        "{0} kept between {1} and {2}.", lambda v, lo, hi: min(max(v, lo), hi),
        (5, 0, 3), (-1, 0, 3), (2, 0, 3)),
    _op("reverse reversed", "items", "return {0}[::-1]", "{0} in reverse order.",
        lambda s: s[::-1], ("abc",), ([1, 2, 3],)),
    _op("length len count size", "items", "return len({0})", "How many items {0} holds.",
        len, ("abc",), ([],)),
    _op("first head", "items", "return {0}[0]", "The first item of {0}.",
        lambda s: s[0], ([4, 5],), ("xy",)),
    _op("last tail", "items", "return {0}[-1]", "The last item of {0}.",
        lambda s: s[-1], ([4, 5],), ("xy",)),
    _op("sort sorted", "items", "return sorted({0})", "{0} in ascending order.",
        sorted, ([3, 1, 2],), ([],)),
    _op("unique dedupe dedup distinct", "items", "return list(dict.fromkeys({0}))",
        "{0} without repeats, in first-seen order.", lambda s: list(dict.fromkeys(s)),
        ([1, 2, 1, 3],), ([],)),
    _op("flatten", "lists", "return [item for inner in {0} for item in inner]",
        "The items of the inner lists, in order.", lambda s: [i for x in s for i in x],
        ([[1, 2], [3]],), ([],)),
    _op("dot", "a b", "return sum(x * y for x, y in zip({0}, {1}))",
        "The dot product of {0} and {1}.", lambda a, b: sum(x * y for x, y in zip(a, b)),
        ([1, 2], [3, 4]), ([], [])),
    _op("norm", "vector", "return sum(x * x for x in {0}) ** 0.5", "The length of {0}.",
        lambda v: sum(x * x for x in v) ** 0.5, ([3, 4],), ([0],)),
    _op("upper uppercase shout", "text", "return {0}.upper()", "{0} in capitals.",
        str.upper, ("abc",), ("",)),
    _op("lower lowercase", "text", "return {0}.lower()", "{0} in small letters.",
        str.lower, ("AbC",), ("",)),
    _op("capitalize title", "text", "return {0}.title()", "{0} with each word capitalised.",
        str.title, ("hello world",), ("",)),
    _op("strip trim", "text", "return {0}.strip()", "{0} without surrounding whitespace.",
        str.strip, ("  a b ",), ("",)),
    _op("palindrome", "text", "return {0} == {0}[::-1]", "Whether {0} reads the same backwards.",
        lambda s: s == s[::-1], ("level",), ("abc",)),
    _op("slug slugify", "text", 'return "-".join({0}.lower().split())',
        "{0} as a lower-case, dash-separated slug.", lambda s: "-".join(s.lower().split()),
        ("Hello Big World",), ("",)),
    _op("greet greeting hello", "name", 'return f"Hello, {{{0}}}!"', "A greeting for {0}.",
        lambda n: f"Hello, {n}!", ("Ada",)),
    _op("health status ping", "", 'return {{"status": "ok"}}', "The service's health.",
        lambda: {"status": "ok"}, ()),
)


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in spaced.lower().split("_") if w]


@dataclass(frozen=True)
class Function:
    """A function the offline model writes: its source and a test body that checks it."""
    name: str
    params: tuple[str, ...]
    source: str
    op: Op | None               # None: a placeholder (the model knows no such operation)

    def test_lines(self, call_prefix: str = "") -> list[str]:
        """`assert name(args) == expected` lines (expected computed, never guessed)."""
        call = f"{call_prefix}{self.name}"
        if self.op is None:
            args = tuple(range(1, len(self.params) + 1))
            expected: Any = dict(zip(self.params, args))
            return [f"assert {call}({', '.join(map(repr, args))}) == {expected!r}"]
        return [f"assert {call}({', '.join(map(repr, s))}) == {self.op.fn(*s)!r}"
                for s in self.op.samples]


def function_for(spec: FuncSpec) -> Function:
    """The function a name asks for: a known operation's body (with the text's parameter
    names when their number fits), or a placeholder that returns its arguments by name."""
    given = spec.params
    for word in _name_words(spec.name):
        for op in OPS:
            if word in op.words and (given is None or len(given) == len(op.params)):
                params = given if given is not None else op.params
                body = op.body.format(*params)
                doc = op.doc if op.doc.startswith("{") else op.doc[0].lower() + op.doc[1:]
                doc = "Return " + doc.format(*params)
                src = (f"def {spec.name}({', '.join(params)}):\n    \"\"\"{_doc(doc)}\"\"\"\n"
                       + "".join(f"    {ln}\n" for ln in body.splitlines()))
                return Function(spec.name, params, src, op)
    params = given if given is not None else ("value",)
    ret = "{" + ", ".join(f'"{p}": {p}' for p in params) + "}"
    src = (f"def {spec.name}({', '.join(params)}):\n"
           f'    """Placeholder by the offline model, which has no implementation of '
           f'{spec.name}: returns its arguments by name."""\n    return {ret}\n')
    return Function(spec.name, params, src, None)


def _doc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"""', '\\"\\"\\"')


def doc_text(text: str) -> str:
    """Text safe inside a triple-quoted docstring."""
    return _doc(text)


# ---------------------------------------------------------------------------------------------
# Edits that keep every existing line
# ---------------------------------------------------------------------------------------------

def count_occurrences(text: str, sub: str) -> int:
    """Occurrences of sub in text, overlapping ones included (edit_file's rule)."""
    n, i = 0, text.find(sub)
    while i >= 0:
        n += 1
        i = text.find(sub, i + 1)
    return n


def insertion(text: str, line: int, insert: str) -> tuple[str, str]:
    """(old, new) for edit_file that inserts `insert` before line index `line` of text (at the
    end when line == number of lines): old is the smallest run of whole lines around the
    point that occurs exactly once. ValueError when no such run exists (an empty file)."""
    lines = text.splitlines(keepends=True)
    if not lines:
        raise ValueError("an empty file has no text to anchor an edit to")
    before, after = 1 if line > 0 else 0, 0 if line > 0 else 1
    while True:
        old = "".join(lines[line - before:line]) + "".join(lines[line:line + after])
        if old.strip() and count_occurrences(text, old) == 1:
            head = "".join(lines[line - before:line])
            return old, head + insert + "".join(lines[line:line + after])
        if before < line:
            before += 1
        elif line + after < len(lines):
            after += 1
        else:
            raise ValueError("no unique text to anchor the edit to")


def main_guard(text: str) -> int | None:
    """The line index of a Python file's `if __name__ == "__main__":` guard, if it has one."""
    for i, ln in enumerate(text.splitlines()):
        if re.match(r"if\s+__name__\s*==\s*['\"]__main__['\"]\s*:", ln):
            return i
    return None


def at_end(text: str, block: str, blank_lines: int, min_lines: int = 1) -> tuple[str, str]:
    """(old, new) for edit_file that appends `block` after the file's last line, blank_lines
    apart. The anchor is the last lines without the final newline, so the edit matches whether
    or not the file ends with one (a request's FILE section does not say), and the file keeps
    its own ending. min_lines: the fewest lines to anchor on (more when `text` is only the
    tail of a long file, where uniqueness cannot be checked against the rest). ValueError when
    the file has no text to anchor to."""
    nl = "\r\n" if "\r\n" in text else "\n"
    lines = text.rstrip("\r\n").splitlines(keepends=True)
    for k in range(min(min_lines, len(lines)), len(lines) + 1):
        old = "".join(lines[-k:])
        if old.strip() and count_occurrences(text, old) == 1:
            body = block.rstrip("\n").replace("\n", nl)
            return old, old + nl * (blank_lines + 1) + body
    raise ValueError("no unique text to anchor the edit to")


def apply(text: str, old: str, new: str) -> str:
    return text.replace(old, new, 1)
