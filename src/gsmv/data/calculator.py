"""The calculator of GSM8K annotations `<<expr=result>>`.

During sampling, when the text ends inside `<<expr=`, the sampler computes
`expr` here and forces `result>>`. Expressions come from a model, so they are
parsed with Python's `ast` and only numbers, + - * / // **, unary signs and
parentheses are walked (never eval). Arithmetic is exact (Fraction); bounds on
length, magnitude, precision and exponents keep every call to microseconds, and
anything outside them gives None (the model then writes the result itself).

What GSM8K's 27,998 train+test annotations contain (checked by the tests):
+ - * / ( ), decimals with and without a leading zero (`.5`), unary minus and
plus (`-14+-8`, `3*+6`), two `//`, no `**`, `%` or thousands commas; integers
up to ~3e9; denominators up to 2000 along the way.

How results are written (format_result): integers exactly, other values as Python
writes the nearest float (repr), in plain notation and without `.0`. Terminating
decimals of up to 15 significant digits are thus exact (1/16 → 0.0625, 3/40 →
0.075); non-terminating values (1/3, 2/7, 2**0.5) come out rounded to the nearest
float (0.3333333333333333, 0.2857142857142857), as the paper's calculator (Python
eval) writes them. Measured on the data: every GSM8K train+test annotation writes
the exact value of its expression (27,997 of 27,998; test-00319 writes `3/4`
itself), 502 of them non-integral with at most 3 decimals, and none has a
non-terminating value (0 of 27,998; test_socratic: 0 of 4,282), so the references
cannot choose a rule for those: every rule matches 0 and misses 0. The paper's
released samples (example_model_solutions.jsonl, 16,692 annotations) hold 162
non-terminating ones: this rule writes 145 of them as the paper does (140 exactly, 5
but for the paper's `.0` in 1875.0: integral values have no `.0` here, as in the
references) and misses 17 (11 only because the paper's calculator rounded every
step to a float, 1/3*5 → 1.6666666666666665; 6 written otherwise: 10*(2/3)=8,
1/3=0.3333333333333333333333); rounding or truncating to a fixed number of
decimals (1 to 6) matches at most 5 of the 162.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from gsmv.data.answers import format_decimal

MAX_EXPR_CHARS = 200  # GSM8K's longest annotation expression has 36
MAX_MAGNITUDE = 10**15  # every operand and intermediate; GSM8K's largest value is ~3e9
# Every operand and intermediate's denominator. GSM8K's largest is 2000; float results copied
# back into an expression (2.3333333333333335*84, 0.013513513513513514/6) and their products
# stay far within. It keeps nested powers ((1-.5**49)**64)**64 from building huge numbers, and
# nonzero values above 1e-30 in size, so a result takes at most ~50 characters.
MAX_DENOMINATOR = 10**30
MAX_EXPONENT = 64  # integer powers; a non-integer power goes through a float

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
    if abs(v) > MAX_MAGNITUDE or v.denominator > MAX_DENOMINATOR:
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
    """`v` as a result: integers exactly ("24", "-7"), others as Python writes the nearest float,
    in plain notation: "0.0625", "0.3333333333333333", "0.000033333333333333335".

    Every terminating decimal of up to 15 significant digits is thus written exactly.
    """
    if v.denominator == 1:
        return str(v.numerator)
    return format_decimal(Decimal(repr(float(v))))


def value(expr: str) -> Fraction | None:
    """The exact value of an annotation expression, or None (see evaluate)."""
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
        return _walk(ast.parse(src, mode="eval"), src)
    except (_Reject, SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError, MemoryError):
        return None


def evaluate(expr: str) -> str | None:
    """The value of an annotation expression as the dataset writes it ("72", "0.2", "-7"), or None.

    Results are formatted by format_result (1/16 → "0.0625", 1/3 → "0.3333333333333333").
    None for anything that is not plain arithmetic, too long, too large, or undefined
    (1/0); never raises and never runs code.
    """
    v = value(expr)
    return None if v is None else format_result(v)


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
