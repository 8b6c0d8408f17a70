"""The calculator of GSM8K annotations `<<expr=result>>`.

During sampling, when the text ends inside `<<expr=`, the sampler computes
`expr` here and forces `result>>`. Expressions come from a model, so they are
parsed with Python's `ast` and only numbers, + - * / // **, unary signs and
parentheses are walked (never eval). Arithmetic is exact (Fraction); bounds on
length, magnitude and exponents keep every call to microseconds, and anything
outside them gives None (the model then writes the result itself).

What GSM8K's 27,998 train+test annotations contain (checked by the tests):
+ - * / ( ), decimals with and without a leading zero (`.5`), unary minus and
plus (`-14+-8`, `3*+6`), two `//`, no `**`, `%` or thousands commas; integers
up to ~3e9; results written exactly (all terminate within 3 decimal places).
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from fractions import Fraction

MAX_EXPR_CHARS = 200  # GSM8K's longest annotation expression has 36
MAX_MAGNITUDE = 10**15  # every operand and intermediate; GSM8K's largest value is ~3e9
MAX_EXPONENT = 64  # integer powers; a non-integer power goes through a float
# Non-integral results are rounded (half away from zero) to this many decimal places: the most
# any GSM8K annotation writes (.125, .004), so every dataset result is reproduced exactly.
RESULT_DECIMALS = 3

ANNOTATION_RE = re.compile(r"<<(?P<expr>[^<>=]*)=(?P<result>[^<>]*)>>")
_ANY_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")  # also `<<...>>` without `=`, for stripping
_ALLOWED_CHARS = re.compile(r"[0-9.+\-*/()\s,]*")
# A comma between digits followed by exactly three digits is a thousands separator (1,000).
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# Python rejects `05`; people and models write it.
_LEADING_ZEROS = re.compile(r"(?<![\d.])0+(?=\d)")


@dataclass(frozen=True)
class Annotation:
    start: int  # span of the whole `<<expr=result>>` in the text
    end: int
    expr: str
    result: str


class _Reject(Exception):
    """Outside what the calculator answers; evaluate() turns it into None."""


def _check(v: Fraction) -> Fraction:
    if abs(v) > MAX_MAGNITUDE:
        raise _Reject
    return v


def _power(base: Fraction, exp: Fraction) -> Fraction:
    if exp.denominator == 1:
        e = exp.numerator
        if abs(e) > MAX_EXPONENT or (base == 0 and e < 0):
            raise _Reject
        # Check the size from logarithms before building a huge number.
        if base != 0 and e * math.log10(abs(base)) > 15.5:
            raise _Reject
        return base**e
    if base <= 0 or abs(exp) > MAX_EXPONENT:
        raise _Reject
    try:
        r = float(base) ** float(exp)
    except OverflowError:
        raise _Reject from None
    if not math.isfinite(r):
        raise _Reject
    return Fraction(r)


def _walk(node: ast.AST, src: str) -> Fraction:
    if isinstance(node, ast.Expression):
        return _walk(node.body, src)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # Read the literal's own text so decimals stay exact (0.1 is 1/10, not a float).
        text = ast.get_source_segment(src, node)
        if text is None:
            raise _Reject
        return _check(Fraction(text))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _walk(node.operand, src)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp):
        a = _walk(node.left, src)
        b = _walk(node.right, src)
        op = node.op
        if isinstance(op, ast.Add):
            return _check(a + b)
        if isinstance(op, ast.Sub):
            return _check(a - b)
        if isinstance(op, ast.Mult):
            return _check(a * b)
        if isinstance(op, ast.Div | ast.FloorDiv):
            if b == 0:
                raise _Reject
            return _check(a / b if isinstance(op, ast.Div) else Fraction(a // b))
        if isinstance(op, ast.Pow):
            return _check(_power(a, b))
    raise _Reject


def format_result(v: Fraction) -> str:
    """Integers without `.0`; others rounded to RESULT_DECIMALS places, trailing zeros trimmed."""
    scale = 10**RESULT_DECIMALS
    n = (abs(v) * scale * 2 + 1) // 2  # round half away from zero, exactly
    if n == 0:
        return "0"
    sign = "-" if v < 0 else ""
    whole, frac = divmod(int(n), scale)
    digits = str(frac).rjust(RESULT_DECIMALS, "0").rstrip("0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def evaluate(expr: str) -> str | None:
    """The value of an annotation expression as the dataset writes it ("72", "0.2", "-7"), or None.

    None for anything that is not plain arithmetic, too long, too large, or undefined
    (1/0); never raises and never runs code.
    """
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    src = expr.strip()
    if not src or not _ALLOWED_CHARS.fullmatch(src):
        return None
    src = _THOUSANDS_COMMA.sub("", src)
    if "," in src:
        return None
    src = _LEADING_ZEROS.sub("", src)
    try:
        tree = ast.parse(src, mode="eval")
        return format_result(_walk(tree, src))
    except (_Reject, SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return None


def find_annotations(text: str) -> list[Annotation]:
    """Every closed `<<expr=result>>` in the text, in order."""
    return [Annotation(m.start(), m.end(), m.group("expr"), m.group("result")) for m in ANNOTATION_RE.finditer(text)]


def strip_annotations(text: str) -> str:
    """The visible text: `48/2 = <<48/2=24>>24 clips` → `48/2 = 24 clips`."""
    return _ANY_ANNOTATION_RE.sub("", text)


def open_annotation(text: str) -> tuple[str, str] | None:
    """(expr, result written so far) when `text` ends inside `<<expr=partial` with no `>>` yet.

    Samplers whose tokens merge `=` with what follows (GPT-2 BPE) use the partial result to
    see where the calculator's answer must continue. The first `=` after the last `<<` is the
    one the calculator acts on. None when no annotation is open or it has no `=` yet.
    """
    start = text.rfind("<<")
    if start < 0:
        return None
    tail = text[start + 2 :]
    if ">>" in tail or "=" not in tail:
        return None
    expr, partial = tail.split("=", 1)
    return expr, partial


def open_expression(text: str) -> str | None:
    """The expr when `text` ends right after the `=` of an open `<<expr=`, else None."""
    opened = open_annotation(text)
    if opened is None or opened[1] != "":
        return None
    return opened[0]
