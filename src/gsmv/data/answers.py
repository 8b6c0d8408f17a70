"""Final answers: extract the number a solution ends with, normalize it, grade it.

GSM8K references end in `#### N`; the paper's released model solutions
(example_model_solutions.jsonl) end in `A: N` instead, so the marker is a
parameter. Numbers are compared as exact decimals (never floats), so large
integers and decimals like 0.1 compare exactly.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

ANSWER_MARKER = "####"
# The final-answer marker of the paper's example_model_solutions.jsonl.
PAPER_MARKER = "A:"

# A number as people write it: optional sign, digits with commas between them, optional decimals
# (`1,000`, `3.50`, `.5`, `18.`); normalize_answer then checks the commas. A `/` and digits right
# after it make it a fraction (`3/4`). What follows may not continue it (see extract_answer):
# a letter, digit or `_` (`1e5`, `0x1F`), one after a `.` or `,` (`1.2.3`), a `/` and digits
# (`3/4.5`), or digits after spaces (`1 000`).
_NUMBER = r"[-+]?(?:\d+(?:,\d+)*(?:\.\d*)?|\.\d+)"
_AFTER_MARKER = re.compile(
    rf"[ \t]*\$?[ \t]*(?P<num>{_NUMBER})(?:[ \t]*/[ \t]*(?P<den>\d+))?(?![.,]?\w|/[ \t]*\d|[ \t]+\d)"
)
# What normalize_answer accepts once `$`, surrounding spaces and a trailing period are gone:
# thousands commas only between groups of three digits (`1,000`, not `1,000,00` or `0,5`). No
# exponents: `1e999999` would make Decimal→int build a million-digit integer.
_PLAIN = re.compile(r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)")
# Longest answer we accept: far above any GSM8K answer (at most 9 digits) and keeps Decimal cheap.
MAX_ANSWER_CHARS = 64

_marker_res: dict[str, re.Pattern[str]] = {}


def _marker_re(marker: str) -> re.Pattern[str]:
    if marker not in _marker_res:
        # A word-like marker (`A:`) must not match inside a word (`DATA:`).
        guard = r"(?<!\w)" if marker[:1].isalnum() else ""
        _marker_res[marker] = re.compile(guard + re.escape(marker))
    return _marker_res[marker]


def normalize_answer(s: str | None) -> str | None:
    """Canonical numeric string: "3.50"→"3.5", "1,000"→"1000", "-0"→"0", "5.0"→"5", "$18."→"18".

    None when `s` is not a plain decimal number (words, exponents, fractions, empty, spaces or
    commas inside that are not thousands separators: "1 000", "1,000,00", "0,5").
    """
    if s is None:
        return None
    t = s.replace("$", "").strip()
    if t.endswith(".") and t.count(".") > 1:  # "3.5." : a sentence-ending period after a decimal
        t = t[:-1]
    if len(t) > MAX_ANSWER_CHARS or not _PLAIN.fullmatch(t):
        return None
    try:
        d = Decimal(t.replace(",", ""))
    except InvalidOperation:
        return None
    return format_decimal(d)


def format_decimal(d: Decimal) -> str:
    """Plain notation, no trailing zeros, integers without a point, and no negative zero."""
    if d == d.to_integral_value():
        return str(int(d))
    return format(d, "f").rstrip("0").rstrip(".")


def _fraction_to_answer(num: str, den: str) -> str | None:
    """A written fraction (`3/4`) as its decimal when that decimal terminates (0.75); else None."""
    n = normalize_answer(num)
    if n is None or int(den) == 0:
        return None
    q = Fraction(n) / int(den)
    d = q.denominator
    for p in (2, 5):
        while d % p == 0:
            d //= p
    if d != 1:
        return None
    return format_decimal(Decimal(q.numerator) / Decimal(q.denominator))


def extract_answer(text: str, marker: str = ANSWER_MARKER) -> str | None:
    """The number right after the LAST `marker` (`####`, or `A:` for the paper's model solutions).

    `$` and spaces around it, thousands commas and a trailing period are dropped; signs and decimals are
    kept; the result is normalized (see normalize_answer). None when the marker is missing or
    not followed by a number. A written fraction counts when it is a terminating decimal
    (`3/4` → 0.75, `1/3` → None).

    Text after the number is ignored (`12 dollars`, `5%`, `18.`), except what would make it
    another number; then the answer is None, never a prefix of it:
    - glued letters or digits: `1e5`, `0x1F`, `5th`, `1.2.3`, `3/4.5` → None (no exponents,
      other bases or ordinals);
    - digits after a space: `1 000`, `12 3/4` → None (a thousands space or two numbers);
    - commas that do not group by threes: `1,000,00`, `1,0000`, `0,5` → None.
    """
    last = None
    for m in _marker_re(marker).finditer(text):
        last = m
    if last is None:
        return None
    m = _AFTER_MARKER.match(text, last.end())
    if m is None:
        return None
    if m.group("den") is not None:
        return _fraction_to_answer(m.group("num"), m.group("den"))
    return normalize_answer(m.group("num"))


def is_correct(completion: str, reference_answer: str, marker: str = ANSWER_MARKER) -> bool:
    """Whether the completion's final answer equals the reference answer numerically.

    `reference_answer` is a bare number (Problem.answer, e.g. "18" or "1,000"); a
    completion without a parsable final answer is wrong.
    """
    got = extract_answer(completion, marker)
    ref = normalize_answer(reference_answer)
    return got is not None and ref is not None and got == ref


# lm-evaluation-harness's gsm8k task (its "strict-match" and "flexible-extract" filters and exact_match's
# regexes_to_ignore), so a user can line gsmv's greedy accuracy up with numbers reported under it.
_LM_EVAL_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_LM_EVAL_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
_LM_EVAL_IGNORE = (re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$"))


def _lm_eval_clean(s: str) -> str:
    for pat in _LM_EVAL_IGNORE:
        s = pat.sub("", s)
    return s.strip().lower()


def lm_eval_matches(completion: str, reference_solution: str) -> tuple[bool, bool]:
    """(strict, flexible): lm-evaluation-harness gsm8k's exact match of the completion against the reference
    solution text (its "#### N" line), with the first `#### N` of the completion (strict) or its last number
    (flexible). "[invalid]" (no match) never equals a reference."""
    gold = _lm_eval_clean(reference_solution)
    m = _LM_EVAL_STRICT.search(completion)
    strict = m is not None and _lm_eval_clean(m.group(1)) == gold
    found = _LM_EVAL_FLEXIBLE.findall(completion)
    flexible = bool(found) and _lm_eval_clean(next(g for g in found[-1] if g)) == gold
    return strict, flexible
