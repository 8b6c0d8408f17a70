"""A synthetic GSM-style task: multi-step word problems generated from a seed, in GSM8K's record format.

Why: a model trained from scratch on a CPU has no skill on GSM8K, so the verifier has nothing to
choose from. Here the difficulty is a knob, and every intermediate value is known, so a sample's
reasoning (not just its final answer) can be checked.

A problem is a random expression tree over the quantities of one item that several people own:
 - a leaf is a stated number ("Ava has 12 marbles.") or a pack ("Ava has 3 boxes with 4 marbles in each.",
   one multiplication);
 - a relation defines a person's quantity from another's and a constant ("Ben has 5 more marbles than Ava.",
   "Ava has a third as many marbles as Ben." — the second defines Ben = Ava × 3);
 - a combination defines it from two others ("Cy has as many marbles as Ava and Ben combined.");
 - the root is the question ("How many more marbles does Cy have than Ben?", "Each marble sells for $3 ...").
Every relation, combination, pack and the question costs one operation, i.e. one solution line
`Ben has 12+5 = <<12+5=17>>17 marbles.`, written children first; the last line is `#### N`.
Facts are shuffled (a fact may name a person defined later) and distractor facts about new people,
some defined from people of the problem, add numbers the answer does not need.

Division is exact by construction (a divisor is drawn from the dividend's divisors) and every value
is a positive integer, so every annotation evaluates with gsmv's calculator to its written result.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# --- pools -----------------------------------------------------------------------------------------
NAMES = (
    "Ava Ben Cara Dev Ella Finn Gia Hugo Iris Jack Kai Lena Milo Nora Owen Pia Quinn Rosa Sam Tara Umar Vera "
    "Wade Xena Yuri Zoe Amir Bea Cole Dana Eli Faye Gus Hana Ivan Jade Kofi Luz Max Nia Omar Pete Rhea Saul "
    "Tess Uma Vic Wren Yara Zack Aiko Bram Chen Dina Emil Fern Gale Hal Ines Jon"
).split()
ITEMS = (
    "apples marbles stickers pencils coins stamps cards books shells beads buttons cookies candies eggs flowers "
    "balloons crayons rocks toys blocks feathers seeds tickets nails lemons peaches plums cherries muffins "
    "bottles cups plates spoons socks ribbons badges postcards puzzles kites magnets"
).split()
ORDINAL = {2: "half", 3: "a third", 4: "a quarter", 5: "a fifth", 6: "a sixth", 7: "a seventh", 8: "an eighth",
           9: "a ninth", 10: "a tenth", 11: "an eleventh", 12: "a twelfth"}

# --- fact templates: {P} is the person the fact defines; {Q}, {R} the ones it depends on -------------
LEAF = (
    "{P} has {v} {items}.",
    "{P} owns {v} {items}.",
    "{P} collected {v} {items}.",
    "There are {v} {items} in {P}'s collection.",
    "{P} keeps {v} {items} at home.",
    "{P} has a total of {v} {items}.",
)
PACK = (  # value = c * b
    "{P} has {c} boxes with {b} {items} in each.",
    "{P} has {c} bags of {b} {items} each.",
    "{P} bought {c} packs of {items}, and each pack holds {b} {items}.",
    "{P} has {c} rows of {items} with {b} {items} in every row.",
    "{P} filled {c} jars with {b} {items} per jar.",
)
REL = {  # P = Q op n; the last templates state the same relation from Q's side
    "+": ("{P} has {n} more {items} than {Q}.", "{P} has {n} {items} more than {Q}.",
          "{P} owns {n} more {items} than {Q} does.", "Compared with {Q}, {P} has {n} extra {items}.",
          "{Q} has {n} fewer {items} than {P}."),
    "-": ("{P} has {n} fewer {items} than {Q}.", "{P} has {n} {items} less than {Q}.",
          "{P} owns {n} fewer {items} than {Q} does.", "{P} has {n} {items} fewer than {Q}.",
          "{Q} has {n} more {items} than {P}."),
    "*": ("{P} has {n} times as many {items} as {Q}.", "{P} owns {n} times the number of {items} that {Q} has.",
          "The number of {items} {P} has is {n} times what {Q} has.", "{P} has {n} times as many {items} as {Q} does.",
          "{Q} has {frac} as many {items} as {P}."),
    "/": ("{P} has {frac} as many {items} as {Q}.", "{P} owns {frac} the number of {items} that {Q} has.",
          "The number of {items} {P} has is {frac} of what {Q} has.", "{P} has {frac} as many {items} as {Q} does.",
          "{Q} has {n} times as many {items} as {P}."),
}
COMB = {  # P = Q op R
    "+": ("{P} has as many {items} as {Q} and {R} combined.", "{P} has as many {items} as {Q} and {R} together.",
          "{P} owns as many {items} as {Q} and {R} put together.",
          "The number of {items} {P} has equals the total of {Q}'s and {R}'s.",
          "{P} has exactly as many {items} as {Q} and {R} have in total."),
    "-": ("{P} has as many {items} as {Q} has more than {R}.",
          "The number of {items} {P} has is the difference between {Q}'s and {R}'s.",
          "{P} owns as many {items} as the difference between {Q}'s and {R}'s {items}.",
          "{P}'s {items} are as many as {Q}'s minus {R}'s.",
          "{P} has as many {items} as {Q} would have left after giving away as many as {R} has."),
}
# --- question templates, by the root's operation ---------------------------------------------------
ASK = ("How many {items} does {P} have?", "How many {items} does {P} own?",
       "What is the number of {items} that {P} has?")
Q_SUM = ("How many {items} do {Q} and {R} have together?", "How many {items} do {Q} and {R} have in total?",
         "What is the total number of {items} that {Q} and {R} have?")
Q_DIFF = ("How many more {items} does {Q} have than {R}?", "How many fewer {items} does {R} have than {Q}?")
Q_REL = {
    "+": ("If {Q} gets {n} more {items}, how many {items} will {Q} have?",
          "{Q} finds {n} more {items}. How many {items} does {Q} have now?"),
    "-": ("If {Q} gives away {n} {items}, how many {items} will {Q} have left?",
          "{Q} loses {n} {items}. How many {items} does {Q} have now?"),
    "*": ("{Q} sells all of the {items} for ${n} each. How many dollars does {Q} make?",
          "Each of {Q}'s {items} is worth ${n}. How many dollars are {Q}'s {items} worth?",
          "If {Q} had {n} times as many {items}, how many {items} would {Q} have?"),
    "/": ("{Q} puts the {items} into bags of {n}. How many bags does {Q} fill?",
          "{Q} shares the {items} equally among {n} friends. How many {items} does each friend get?"),
}
N_FACT_TEMPLATES = len(LEAF) + len(PACK) + sum(map(len, REL.values())) + sum(map(len, COMB.values()))
N_QUESTION_TEMPLATES = len(ASK) + len(Q_SUM) + len(Q_DIFF) + sum(map(len, Q_REL.values()))

MAX_VALUE = 100_000  # no quantity grows past this (keeps numbers GSM8K-sized)


@dataclass
class SynthSettings:
    """The difficulty knobs (config: data.synth.*, which adds sizes and the seed)."""

    min_steps: int = 2  # operations per problem (= solution lines before `####`)
    max_steps: int = 5
    min_distractors: int = 0  # facts whose numbers the answer does not need
    max_distractors: int = 2
    max_number: int = 50  # stated numbers are drawn from [2, max_number]
    max_factor: int = 5  # multipliers and divisors are drawn from [2, max_factor]
    p_combine: float = 0.4  # chance an operation combines two quantities (a graph) instead of one and a constant
    p_pack: float = 0.2  # chance a leaf is a pack (boxes × per box: one more operation)
    shuffle: bool = True  # facts in random order (else children before parents, as a solution reads them)


@dataclass
class _Node:
    kind: str  # leaf | pack | rel | comb
    value: int
    person: str = ""
    op: str = ""
    n: int = 0  # the constant of a relation; the per-pack count of a pack
    c: int = 0  # the number of packs
    kids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class SynthProblem:
    question: str
    answer: str  # GSM8K format: solution lines with <<expr=result>> and a final `#### N`
    steps: int
    values: tuple[str, ...]  # every intermediate result, in solution order (the last is the answer)


class _Builder:
    def __init__(self, rng: random.Random, s: SynthSettings):
        self.rng, self.s = rng, s
        self.nodes: list[_Node] = []

    def add(self, node: _Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def number(self) -> int:
        return self.rng.randint(2, max(2, self.s.max_number))

    def tree(self, ops: int) -> int:
        """A subtree using exactly `ops` operations; returns its root's index."""
        rng = self.rng
        if ops == 0:
            return self.add(_Node("leaf", self.number()))
        if ops == 1 and rng.random() < self.s.p_pack:
            c, b = rng.randint(2, max(2, self.s.max_factor + 4)), rng.randint(2, max(2, self.s.max_number // 3))
            return self.add(_Node("pack", c * b, n=b, c=c))
        if rng.random() < self.s.p_combine:
            left = rng.randint(0, ops - 1)
            return self.combine(self.tree(left), self.tree(ops - 1 - left))
        return self.relate(self.tree(ops - 1))

    def combine(self, a: int, b: int) -> int:
        va, vb = self.nodes[a].value, self.nodes[b].value
        if va == vb or self.rng.random() < 0.6 or va + vb > MAX_VALUE:
            op = "+"
        else:
            op = "-"
            if va < vb:
                a, b, va, vb = b, a, vb, va
        return self.add(_Node("comb", va + vb if op == "+" else va - vb, op=op, kids=[a, b]))

    def rel_choice(self, v: int) -> tuple[str, int]:
        """A relation `v op n` whose result is a positive integer within bounds."""
        rng, f = self.rng, max(2, self.s.max_factor)
        options = ["+"]
        if v > 2:
            options.append("-")
        if v * 2 <= MAX_VALUE:
            options.append("*")
        divisors = [k for k in range(2, f + 1) if v % k == 0 and k in ORDINAL]
        if divisors:
            options.append("/")
        op = rng.choice(options)
        if op == "+":
            return op, self.number()
        if op == "-":
            return op, rng.randint(1, min(v - 1, self.s.max_number))
        if op == "*":
            # Multipliers stay within ORDINAL: "a third as many" states the same relation from the other side.
            return op, rng.randint(2, max(2, min(f, MAX_VALUE // v, max(ORDINAL))))
        return op, rng.choice(divisors)

    def relate(self, a: int) -> int:
        v = self.nodes[a].value
        op, n = self.rel_choice(v)
        return self.add(_Node("rel", _apply(v, op, n), op=op, n=n, kids=[a]))


def _apply(a: int, op: str, b: int) -> int:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op]


def _line(expr: str, result: int, text: str) -> str:
    # GSM8K writes `Natalia sold 48/2 = <<48/2=24>>24 clips in May.`
    return text.format(calc=f"{expr} = <<{expr}={result}>>{result}")


# Long on purpose: one problem is drawn in one pass (tree, people, facts, distractors, question), and each
# draw consumes the seeded RNG in a fixed order that every existing synth dataset depends on.
def make_problem(rng: random.Random, s: SynthSettings) -> SynthProblem:
    """One problem with between s.min_steps and s.max_steps operations."""
    steps = rng.randint(s.min_steps, s.max_steps)
    b = _Builder(rng, s)
    # The root is the question's operation; it must be a relation or a combination (a pack has no people).
    while True:
        b.nodes.clear()
        root = b.tree(steps)
        if b.nodes[root].kind in ("rel", "comb"):
            break
    nodes = b.nodes
    item = rng.choice(ITEMS)
    people = rng.sample(NAMES, len(nodes) + s.max_distractors + 1)
    for i, node in enumerate(nodes):
        node.person = people[i]
    spare = people[len(nodes):]

    def fill(t: str, node: _Node, **kw: object) -> str:
        kids = [nodes[k].person for k in node.kids]
        fmt = {"P": node.person, "items": item, "v": node.value, "n": node.n, "c": node.c,
               "b": node.n, "frac": ORDINAL.get(node.n, ""), **kw}
        if kids:
            fmt["Q"] = kids[0]
        if len(kids) > 1:
            fmt["R"] = kids[1]
        return t.format(**fmt)

    def fact(node: _Node) -> str:
        if node.kind == "leaf":
            return fill(rng.choice(LEAF), node)
        if node.kind == "pack":
            return fill(rng.choice(PACK), node)
        return fill(rng.choice(REL[node.op] if node.kind == "rel" else COMB[node.op]), node)

    root_node = nodes[root]
    ask = rng.random() < 0.35  # the question asks for a person defined by a fact, or adds its own operation
    facts = [fact(n) for i, n in enumerate(nodes) if i != root or ask]
    if ask:
        question = fill(rng.choice(ASK), root_node)
    elif root_node.kind == "comb":
        question = fill(rng.choice(Q_SUM if root_node.op == "+" else Q_DIFF), root_node)
    else:
        question = fill(rng.choice(Q_REL[root_node.op]), root_node)

    for _ in range(rng.randint(s.min_distractors, s.max_distractors)):
        person = spare.pop()
        if rng.random() < 0.5:
            d = _Node("leaf", b.number(), person=person)
        else:  # a relation to someone in the problem: same entities, a number nobody needs
            # (the root's person exists only when the question asks for it)
            base = rng.choice([i for i in range(len(nodes)) if i != root or ask])
            op, n = b.rel_choice(nodes[base].value)
            d = _Node("rel", _apply(nodes[base].value, op, n), person=person, op=op, n=n, kids=[base])
        facts.insert(rng.randint(0, len(facts)), fact(d))
    if s.shuffle:
        rng.shuffle(facts)

    lines, values = [], []

    def solve(i: int) -> None:  # children first, left to right: a valid order
        node = nodes[i]
        for k in node.kids:
            solve(k)
        if node.kind == "leaf":
            return
        if node.kind == "pack":
            expr = f"{node.c}*{node.n}"
        elif node.kind == "rel":
            expr = f"{nodes[node.kids[0]].value}{node.op}{node.n}"
        else:
            expr = f"{nodes[node.kids[0]].value}{node.op}{nodes[node.kids[1]].value}"
        lines.append(_line(expr, node.value, _solution_text(node, nodes, item, is_root=(i == root and not ask))))
        values.append(str(node.value))

    solve(root)
    answer = "\n".join(lines) + f"\n#### {root_node.value}"
    return SynthProblem(" ".join(facts) + " " + question, answer, steps, tuple(values))


def _solution_text(node: _Node, nodes: list[_Node], item: str, is_root: bool) -> str:
    if not is_root:
        return f"{node.person} has {{calc}} {item}."
    q = nodes[node.kids[0]].person
    if node.kind == "comb":
        r = nodes[node.kids[1]].person
        return f"Together they have {{calc}} {item}." if node.op == "+" else f"{q} has {{calc}} more {item} than {r}."
    return {"+": f"{q} will have {{calc}} {item}.", "-": f"{q} has {{calc}} {item} left.",
            "*": "The answer is {calc}.", "/": "The answer is {calc}."}[node.op]


def generate(n: int, seed: int, s: SynthSettings, exclude: set[str] | frozenset[str] = frozenset(),
             stream: str = "train") -> list[SynthProblem]:
    """`n` problems with distinct questions, none of them in `exclude`; deterministic for (seed, stream)."""
    rng = random.Random(f"gsmv-synth:{seed}:{stream}")
    out: list[SynthProblem] = []
    seen = set(exclude)
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 20 * n + 1000:
            raise ValueError(f"could only make {len(out)} distinct problems of {n}; widen data.synth's ranges")
        p = make_problem(rng, s)
        if p.question in seen:
            continue
        seen.add(p.question)
        out.append(p)
    return out
