"""report.html: a self-contained viewer of test problems and their samples ranked by the verifier.

One file, no external URLs: inline CSS and JS, the data embedded as JSON. For each problem it
shows the question, the reference solution, the greedy sample, and the samples ranked by
verifier score with correct/wrong marks; where the scores carry per-token values, each token's
background is coloured by the verifier's value after it (red 0 → green 1). Filters: verifier
picked wrong (the top sample is wrong though some sample is right), no correct sample, verifier
picked right, and a search box. The filter and search live in the URL hash
(`#filter=wrong&q=apples`), so a view can be linked (and tested with a headless browser).

Size is kept down by showing cfg.report.html_problems problems and, per problem, only the
cfg.report.html_samples top-ranked samples in full (plus the best-ranked correct one when it is
lower); the others are listed as rank / score / answer rows. Identical samples of a problem are one
entry with their count.
"""

from __future__ import annotations

import html
import json
import logging
import math
from typing import Any

import numpy as np

from gsmv import progress
from gsmv.formatting import label
from gsmv.token_text import load_tokenizer, token_pieces, token_pieces_batch  # noqa: F401 - the viewer's

log = logging.getLogger(__name__)

CATEGORIES = {"right": "verifier picked right", "wrong": "verifier picked wrong", "none": "no correct sample"}


def _utf16_len(s: str) -> int:
    """Length as JavaScript counts it (UTF-16 code units), so the page can slice the text by token."""
    return len(s.encode("utf-16-le")) // 2


# One character per token for lengths and values keeps the embedded data small.
ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"  # 62 symbols


def encode_values(values: list[float | None], n: int) -> str:
    """Per-token values, one character each: ALPHABET[round(61 v)] for v clipped to [0, 1]; "-" = no value."""
    out = []
    for v in list(values)[:n]:
        if v is None or not math.isfinite(v):
            out.append("-")
        else:
            out.append(ALPHABET[int(round(61 * min(1.0, max(0.0, v))))])
    return "".join(out)


def encode_lengths(pieces: list[str]) -> str | list[int]:
    """Each token's text length in UTF-16 units (as JavaScript slices strings): one character each, or a
    list when a token is 62 units or longer."""
    lens = [_utf16_len(x) for x in pieces]
    return "".join(ALPHABET[k] for k in lens) if max(lens, default=0) < len(ALPHABET) else lens


def _texts(data: Any, shown: list[int], n: int) -> np.ndarray | None:
    """The text of every sample of the shown problems ([P, n], object), or None when the shards hold no text."""
    if not data.has_sample_column("text"):
        return None
    rows = np.asarray(data.sample_rows[shown], dtype=np.int64).reshape(-1)
    col = data.sample_columns(rows, ["text"]).column("text").to_pylist()
    out = np.empty(data.correct.shape, dtype=object)
    out[shown] = np.array([t or "" for t in col], dtype=object).reshape(len(shown), n)
    return out


# Long on purpose: it builds one JSON document whose parts (rows shown in full, short rows, token
# colours) share the per-problem order and the columns read once.
def viewer_data(data: Any, results: dict, *, max_problems: int = 300, max_samples: int = 10,
                tokenizer: Any | None = None, run_name: str = "") -> dict:
    """The JSON the viewer embeds, from gsmv.run_data.load_run(...) data; the text, tokens and per-token values of
    the samples shown in full are read here (EvalData.sample_columns / score_columns), not for every sample.

    Identical samples of a problem (the same text) are one entry: the best-ranked of them, with "c", their
    count, when there are several ("d" is a problem's count of entries). An entry shown in full is
    {"r": rank (1 = the verifier's pick), "i": sample_idx, "a": answer, "ok": 0|1, "sc": score, "t": text} plus,
    with per-token values and a tokenizer, "L": encode_lengths(token texts) (summing to len(t)) and
    "v": encode_values(...). Other entries are [r, i, a, ok, sc, count] rows.
    """
    P, n = data.correct.shape
    shown = list(range(P if max_problems <= 0 else min(P, max_problems)))
    scores_all = data.scores if data.scores is not None else np.zeros((P, n))
    orders = {p: [int(j) for j in np.argsort(-scores_all[p], kind="stable")] for p in shown}
    texts = _texts(data, shown, n)
    # Identical samples of a problem are one entry with their count: a weak generator repeats itself, and ten
    # copies of one wrong line would hide the other samples. Entries are in the order of their best rank.
    groups: dict[int, list[list[int]]] = {}
    for p in shown:
        by_text: dict[str, list[int]] = {}
        for j in orders[p]:
            by_text.setdefault(texts[p, j] if texts is not None else f"#{j}", []).append(j)
        groups[p] = list(by_text.values())
    full: dict[int, list[int]] = {}  # the entries (indices into groups[p]) shown in full
    for p in shown:
        correct = data.correct[p]
        pick = list(range(min(max_samples, len(groups[p]))))
        first_ok = next((g for g, js in enumerate(groups[p]) if correct[js[0]]), None)
        if first_ok is not None and first_ok >= max_samples:
            pick.append(first_ok)  # the best-ranked correct entry, to compare with the pick
        full[p] = pick
    # Only the entries shown in full are read out of the (large) list columns, once per entry.
    keys = [(p, groups[p][g][0]) for p in shown for g in full[p]]
    rows = np.array([data.sample_rows[p, j] for p, j in keys], dtype=np.int64)
    sub = data.sample_columns(rows, ["tokens"])
    tokens = sub.column("tokens").to_pylist() if "tokens" in sub.column_names else None
    full_texts = [texts[p, j] if texts is not None else "" for p, j in keys]
    values = None
    if data.score_table is not None:
        srows = np.array([data.score_rows[p, j] for p, j in keys], dtype=np.int64)
        vals = data.score_columns(srows, ["token_values"])
        values = vals.column("token_values").to_pylist() if "token_values" in vals.column_names else None
    pieces: list[list[str] | None] = [None] * len(keys)
    if tokenizer is not None and tokens is not None and values is not None:
        want = [k for k in range(len(keys)) if tokens[k] and values[k]]
        for k, pc in zip(want, token_pieces_batch(tokenizer, [tokens[k] for k in want],
                                                  [full_texts[k] for k in want]), strict=True):
            pieces[k] = pc
    g_text = g_ans = None
    if data.greedy is not None:
        g = data.greedy.take(np.asarray(data.greedy_rows[shown], dtype=np.int64))
        g_text = g.column("text").to_pylist() if "text" in g.column_names else None
        g_ans = g.column("final_answer").to_pylist()

    # Step truth and the verifier's pointer (tasks with step truth; gsmv.steps): the localization's threshold.
    loc = (results.get("steps") or {}).get("localization")
    threshold = loc.get("threshold") if loc else None

    problems, k = [], 0
    for p in progress.bar(shown, desc="report.html", unit="problem", disable=None):
        prob, order, correct, scores = data.problems[p], orders[p], data.correct[p], scores_all[p]
        rank_of = {j: r for r, j in enumerate(order)}
        samples = []
        for g in full[p]:
            j, count = groups[p][g][0], len(groups[p][g])
            rec: dict[str, Any] = {"r": rank_of[j] + 1, "i": j, "a": data.answers[p][j], "ok": int(correct[j]),
                                   "sc": round(float(scores[j]), 4), "t": full_texts[k]}
            if count > 1:
                rec["c"] = count
            if pieces[k] is not None:
                rec["t"] = "".join(pieces[k])
                rec["L"] = encode_lengths(pieces[k])
                rec["v"] = encode_values(values[k], len(pieces[k]))
                if loc is not None:
                    rec.update(_step_marks(pieces[k], values[k], data.problems[p], threshold))
            samples.append(rec)
            k += 1
        in_full = set(full[p])
        rest = [[rank_of[js[0]] + 1, js[0], data.answers[p][js[0]], int(correct[js[0]]),
                 round(float(scores[js[0]]), 3), len(js)]
                for g, js in enumerate(groups[p]) if g not in in_full]
        top_ok = bool(correct[order[0]])
        greedy = None
        if data.greedy_correct is not None:
            greedy = {"t": g_text[len(problems)] if g_text is not None else None,
                      "a": g_ans[len(problems)] if g_ans is not None else None, "ok": int(data.greedy_correct[p])}
        differ = any("fw" in r and "pw" in r and r["fw"] != r["pw"] for r in samples)
        problems.append({"id": prob.id, "q": prob.question, "ref": prob.answer, "sol": prob.solution, "sd": int(differ),
                         "cat": "right" if top_ok else ("wrong" if correct.any() else "none"),
                         "n": n, "nc": int(correct.sum()), "d": len(groups[p]), "g": greedy, "s": samples,
                         "rest": rest})
    metrics = results.get("metrics", {})
    # [label, value] pairs, the labels from gsmv.formatting (the viewer's script has none of its own).
    headline = [[label(m, n), (metrics.get(m) or {}).get("value")]
                for m in ("test@1", "pass@1", "majority_vote", "best_of_n", "oracle")]
    return {"run": run_name or results.get("run", ""), "n_problems": P, "n_samples": n,
            "shown_problems": len(problems), "headline": headline, "problems": problems}


def _step_marks(pieces: list[str], values: list[float], problem: Any, threshold: float | None) -> dict:
    """A sample's steps as [result, right (0/1), the verifier's value at the step's end], "fw" the true first
    wrong step (-1: none) and, with a threshold, "pw" the step the verifier points at (its first value below
    the threshold; -1: none), as gsmv.steps' localization judges them."""
    from gsmv.data.tasks import reference_values
    from gsmv.steps import step_ends

    ends, results = step_ends(pieces)
    ref = reference_values(problem)
    st = [[r, int(r in ref), round(float(values[t]), 3)] for t, r in zip(ends, results, strict=True) if t < len(values)]
    out: dict[str, Any] = {"st": st, "fw": next((i for i, x in enumerate(st) if not x[1]), -1)}
    if threshold is not None:
        out["pw"] = next((i for i, x in enumerate(st) if x[2] < threshold), -1)
    return out


def _embed_json(obj: Any) -> str:
    """JSON that is safe inside a <script> element (no `</script>`, no `<!--`)."""
    # ASCII only: the file is then the same bytes whatever the locale's encoding.
    s = json.dumps(obj, ensure_ascii=True, separators=(",", ":"))
    return s.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def render_html(payload: dict) -> str:
    title = html.escape(f"gsmv viewer: {payload.get('run', '')}")
    return (_TEMPLATE.replace("__TITLE__", title).replace("__CSS__", _CSS).replace("__JS__", _JS)
            .replace("__DATA__", _embed_json(payload)))


_CSS = """
:root{--ok:#1a7f37;--bad:#cf222e;--mute:#57606a;--line:#d0d7de;--bg:#f6f8fa}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;background:#fff}
header{padding:12px 20px;border-bottom:1px solid var(--line);background:var(--bg)}
header h1{font-size:18px;margin:0 0 4px}
#summary span{margin-right:16px;color:var(--mute)} #summary b{color:#1f2328}
nav{position:sticky;top:0;z-index:2;background:#fff;padding:8px 20px;border-bottom:1px solid var(--line);
 display:flex;gap:8px;flex-wrap:wrap;align-items:center}
nav button{border:1px solid var(--line);background:#fff;border-radius:6px;padding:4px 10px;cursor:pointer;font:inherit}
nav button[aria-pressed=true]{background:#0969da;color:#fff;border-color:#0969da}
nav input{flex:1;min-width:180px;padding:5px 8px;border:1px solid var(--line);border-radius:6px;font:inherit}
#count{color:var(--mute)}
.legend{color:var(--mute);font-size:12px}
.legend i{display:inline-block;width:60px;height:10px;vertical-align:middle;margin:0 4px;
 background:linear-gradient(90deg,hsla(0,70%,55%,.45),hsla(60,70%,55%,.45),hsla(120,70%,45%,.45))}
main{padding:10px 20px}
details.problem{border:1px solid var(--line);border-radius:8px;margin:8px 0;background:#fff}
details.problem>summary{cursor:pointer;padding:8px 12px;display:flex;gap:10px;align-items:baseline;list-style:none}
details.problem>summary::-webkit-details-marker{display:none}
details.problem[open]>summary{border-bottom:1px solid var(--line);background:var(--bg)}
.pid{font-family:ui-monospace,monospace;color:var(--mute);white-space:nowrap}
.q1{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;flex:1}
.badge{font-size:12px;border-radius:10px;padding:1px 8px;white-space:nowrap;color:#fff}
.badge.right{background:var(--ok)} .badge.wrong{background:#bf8700} .badge.none{background:var(--bad)}
.nc{color:var(--mute);white-space:nowrap;font-size:12px}
.body{padding:8px 14px 12px}
.body h3{font-size:13px;margin:12px 0 4px;color:var(--mute);text-transform:uppercase;letter-spacing:.04em}
pre{white-space:pre-wrap;word-break:break-word;margin:0;font:13px/1.5 ui-monospace,SFMono-Regular,Menlo,monospace}
.sample{border-left:4px solid var(--line);padding:4px 10px;margin:6px 0;background:#fff}
.sample.ok{border-color:var(--ok)} .sample.bad{border-color:var(--bad)}
.meta{font-size:12px;color:var(--mute);margin-bottom:2px}
.count{font-weight:bold}
.steps{font-size:12px;margin:2px 0} .step.ok{color:var(--ok)} .step.bad{color:var(--bad)}
.mark{font-weight:bold} .mark.ok{color:var(--ok)} .mark.bad{color:var(--bad)}
.tok{border-radius:2px}
table.rest{border-collapse:collapse;font-size:12px;margin-top:4px}
table.rest td,table.rest th{border-bottom:1px solid var(--line);padding:2px 10px;text-align:right}
#more{margin:6px 20px 30px;padding:6px 14px}
.empty{color:var(--mute);padding:20px}
"""

_JS = r"""
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("gsmv-data").textContent);
  const PAGE = 50;
  const FILTERS = ["all", "wrong", "none", "right", "differ"];
  const CAT = {right: "verifier picked right", wrong: "verifier picked wrong", none: "no correct sample"};
  const state = {filter: "all", q: "", open: "", limit: PAGE};

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(1) + "%";
  const mark = (ok) => el("span", {class: "mark " + (ok ? "ok" : "bad")}, ok ? "\u2713 correct" : "\u2717 wrong");

  function readHash() {
    const h = new URLSearchParams(location.hash.replace(/^#/, ""));
    state.filter = FILTERS.includes(h.get("filter")) ? h.get("filter") : "all";
    state.q = h.get("q") || "";
    state.open = h.get("open") || "";
    state.limit = PAGE;
  }
  function writeHash() {
    const h = new URLSearchParams();
    if (state.filter !== "all") h.set("filter", state.filter);
    if (state.q) h.set("q", state.q);
    const s = h.toString();
    if (s !== location.hash.replace(/^#/, "")) {
      try { history.replaceState(null, "", s ? "#" + s : location.pathname + location.search); }
      catch (e) { location.hash = s; }
    }
  }

  // Token i is t.slice(sum(L[:i]), sum(L[:i+1])); its value is ALPHABET.indexOf(v[i]) / 61 (see html.py).
  const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  function solution(s) {
    const text = s.t || "";
    if (!s.L) return el("pre", {}, text);
    const lens = typeof s.L === "string" ? Array.from(s.L, (c) => ALPHABET.indexOf(c)) : s.L;
    const pre = el("pre", {});
    let off = 0;
    lens.forEach((len, i) => {
      const piece = text.slice(off, off + len);
      off += len;
      const code = ALPHABET.indexOf((s.v || "").charAt(i));
      if (code < 0) { pre.append(piece); return; }
      const x = code / 61;
      const span = el("span", {class: "tok", title: "value " + x.toFixed(2)}, piece);
      span.style.background = "hsla(" + Math.round(120 * x) + ",70%," + (x > 0.5 ? 45 : 55) + "%,0.38)";
      pre.append(span);
    });
    if (off < text.length) pre.append(text.slice(off));
    return pre;
  }

  const times = (c) => (c > 1 ? "\u00d7" + c : "");
  // Each step: its result, right or wrong, the verifier's value at its end; the true first wrong step and the
  // one the verifier points at (its first value below the localization threshold) are named.
  function stepsLine(s) {
    if (!s.st) return null;
    const line = el("div", {class: "steps", "data-fw": s.fw, "data-pw": s.pw === undefined ? "" : s.pw}, "steps: ");
    s.st.forEach(([r, ok, v], i) => {
      const tags = (i === s.fw ? " \u2190 first wrong" : "") + (i === s.pw ? " \u2190 verifier points here" : "");
      line.append(el("span", {class: "step " + (ok ? "ok" : "bad")}, (ok ? "\u2713 " : "\u2717 ") + r + " (" +
        v.toFixed(2) + ")" + tags), " ");
    });
    if (!s.st.length) line.append("none");
    else if (s.fw < 0 && s.pw !== undefined && s.pw >= 0) line.append(" (no wrong step; the verifier points at " + (s.pw + 1) + ")");
    return line;
  }
  function sampleBox(s) {
    return el("div", {class: "sample " + (s.ok ? "ok" : "bad"), "data-rank": s.r},
      el("div", {class: "meta"}, "#" + s.r + " \u00b7 sample " + s.i + " \u00b7 score " + s.sc.toFixed(4) +
        " \u00b7 answer " + (s.a === null ? "(none)" : s.a) + " \u00b7 ", mark(s.ok),
        s.c > 1 ? el("span", {class: "count"}, " \u00b7 " + times(s.c) + " (" + s.c + " identical samples)") : null),
      stepsLine(s), solution(s));
  }

  function body(p) {
    const b = el("div", {class: "body"});
    b.append(el("h3", {}, "question"), el("pre", {}, p.q));
    b.append(el("h3", {}, "reference (answer " + p.ref + ")"), el("pre", {}, p.sol));
    if (p.g) {
      b.append(el("h3", {}, "greedy sample (test@1)"),
        el("div", {class: "sample " + (p.g.ok ? "ok" : "bad")},
          el("div", {class: "meta"}, "answer " + (p.g.a === null ? "(none)" : p.g.a) + " \u00b7 ", mark(p.g.ok)),
          el("pre", {}, p.g.t || "")));
    }
    b.append(el("h3", {}, "samples ranked by the verifier (" + p.nc + " of " + p.n + " correct" +
      (p.d < p.n ? "; " + p.d + " distinct" : "") + ")"));
    for (const s of p.s) b.append(sampleBox(s));
    if (p.rest.length) {
      const t = el("table", {class: "rest"}, el("tr", {}, el("th", {}, "rank"), el("th", {}, "sample"),
        el("th", {}, "score"), el("th", {}, "answer"), el("th", {}, ""), el("th", {}, "copies")));
      let more = 0;
      for (const [r, i, a, ok, sc, c] of p.rest) {
        more += c;
        t.append(el("tr", {class: ok ? "ok" : "bad"}, el("td", {}, r), el("td", {}, i), el("td", {}, sc.toFixed(4)),
          el("td", {}, a === null ? "(none)" : a), el("td", {}, mark(ok)), el("td", {}, times(c))));
      }
      const what = more === p.rest.length ? more + " more samples" : more + " more samples (" + p.rest.length + " distinct)";
      b.append(el("details", {class: "restbox"}, el("summary", {}, what), t));
    }
    return b;
  }

  function card(p, open) {
    const d = el("details", {class: "problem", "data-id": p.id, "data-cat": p.cat});
    d.append(el("summary", {}, el("span", {class: "pid"}, p.id), el("span", {class: "badge " + p.cat}, CAT[p.cat]),
      el("span", {class: "nc"}, p.nc + "/" + p.n + " correct"), el("span", {class: "q1"}, p.q)));
    const build = () => { if (!d.dataset.built) { d.append(body(p)); d.dataset.built = "1"; } };
    d.addEventListener("toggle", () => { if (d.open) build(); });
    if (open) { d.open = true; build(); }
    return d;
  }

  function matches(p) {
    if (state.filter === "differ") { if (!p.sd) return false; }
    else if (state.filter !== "all" && p.cat !== state.filter) return false;
    if (!state.q) return true;
    const q = state.q.toLowerCase();
    return p.id.toLowerCase().includes(q) || p.q.toLowerCase().includes(q) || String(p.ref) === state.q;
  }

  function render() {
    const hits = D.problems.filter(matches);
    const list = document.getElementById("list");
    const shown = hits.slice(0, state.limit);
    list.replaceChildren(...shown.map((p, i) => card(p, state.open ? p.id === state.open : i === 0)));
    if (!hits.length) list.append(el("div", {class: "empty"}, "no problem matches"));
    document.getElementById("count").textContent = "showing " + shown.length + " of " + hits.length +
      " matching (" + D.problems.length + " problems in this file, " + D.n_problems + " in the test split)";
    document.getElementById("more").hidden = hits.length <= state.limit;
    for (const b of document.querySelectorAll("#filters button"))
      b.setAttribute("aria-pressed", String(b.dataset.filter === state.filter));
    document.body.dataset.filter = state.filter;
    document.body.dataset.shown = String(shown.length);
    document.body.dataset.matching = String(hits.length);
  }

  function init() {
    document.title = "gsmv viewer: " + D.run;
    document.getElementById("summary").append(
      el("span", {}, "run ", el("b", {}, D.run)),
      el("span", {}, D.n_problems + " problems \u00d7 " + D.n_samples + " samples"),
      ...D.headline.map(([name, v]) => el("span", {}, name + " ", el("b", {}, pct(v)))));
    const counts = {all: D.problems.length, right: 0, wrong: 0, none: 0, differ: 0};
    for (const p of D.problems) { counts[p.cat] += 1; counts.differ += p.sd ? 1 : 0; }
    for (const b of document.querySelectorAll("#filters button")) {
      b.querySelector(".n").textContent = " (" + counts[b.dataset.filter] + ")";
      b.addEventListener("click", () => { state.filter = b.dataset.filter; state.limit = PAGE; state.open = "";
        writeHash(); render(); });
    }
    const search = document.getElementById("search");
    search.value = state.q;
    search.addEventListener("input", () => { state.q = search.value.trim(); state.limit = PAGE; state.open = "";
      writeHash(); render(); });
    document.getElementById("more").addEventListener("click", () => { state.limit += PAGE; render(); });
    window.addEventListener("hashchange", () => { readHash(); search.value = state.q; render(); });
  }

  readHash();
  init();
  render();
  document.body.dataset.ready = "1";
})();
"""

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>__TITLE__</title>
<script>window.__gsmvErrors = []; window.addEventListener("error", function (e) {
  window.__gsmvErrors.push(String(e.message || e)); document.documentElement.dataset.errors = window.__gsmvErrors.join(" | ");
});</script>
<style>__CSS__</style></head>
<body>
<header><h1>__TITLE__</h1><div id="summary"></div></header>
<nav><div id="filters">
<button data-filter="all">all<span class="n"></span></button>
<button data-filter="wrong">verifier picked wrong<span class="n"></span></button>
<button data-filter="none">no correct sample<span class="n"></span></button>
<button data-filter="right">verifier picked right<span class="n"></span></button>
<button data-filter="differ" title="a sample shown in full whose true first wrong step is not the one the verifier points at">verifier misplaces the first wrong step<span class="n"></span></button>
</div>
<input id="search" type="search" placeholder="search: question text, problem id or reference answer">
<span id="count"></span>
<span class="legend">verifier value per token: 0<i></i>1</span>
</nav>
<main id="list"></main>
<button id="more" hidden>show more</button>
<script type="application/json" id="gsmv-data">__DATA__</script>
<script>__JS__</script>
</body></html>
"""
