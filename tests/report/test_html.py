"""report.html: the data it embeds, that it is self-contained, and (in headless Chromium) that it works."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fake_run import build_run
from PIL import Image

from gsmv import evaluate, report
from gsmv.artifacts import RunPaths
from gsmv.config import load_config
from gsmv.report import html as H
from gsmv.run_data import load_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
browser = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")


def embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="gsmv-data">(.*?)</script>', page, re.S)
    assert m is not None
    return json.loads(m.group(1))


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_data_dir, tiny_tokenizer):
    """A run folder with a report: 40 test problems × 12 samples, the viewer limited to 30 problems, 5 samples."""
    root = tmp_path_factory.mktemp("site")
    cfg = load_config(None, [f"data.dir={tiny_data_dir}", f"out_dir={root}", "name=viewer", "evaluate.bootstrap=20",
                             "report.html_problems=30", "report.html_samples=5"])
    correct, scores = build_run(cfg, tokenizer=tiny_tokenizer)
    evaluate.main(cfg)
    report.main(cfg)
    page = RunPaths(cfg.run_dir).report_html
    return {"cfg": cfg, "page": page, "html": page.read_text(), "correct": correct, "scores": scores}


def categories(correct: np.ndarray, scores: np.ndarray) -> list[str]:
    out = []
    for c, s in zip(correct, scores, strict=True):
        top = int(np.argsort(-s, kind="stable")[0])
        out.append("right" if c[top] else ("wrong" if c.any() else "none"))
    return out


# --------------------------------------------------------------------------- the embedded data


def entries(c: np.ndarray, order: np.ndarray) -> list[list[int]]:
    """fake_run's samples grouped as the viewer groups identical ones, best rank first: the right samples of a
    problem share one text (the reference solution), each wrong one has its own answer."""
    groups: dict[object, list[int]] = {}
    for j in order.tolist():
        groups.setdefault("right" if c[j] else j, []).append(j)
    return list(groups.values())


def test_viewer_data_ranks_samples_and_categorises_problems(site):
    data = embedded(site["html"])
    correct, scores = site["correct"][:30], site["scores"][:30]
    assert data["shown_problems"] == 30 and data["n_problems"] == 40 and data["n_samples"] == 12
    want = categories(correct, scores)
    assert [p["cat"] for p in data["problems"]] == want
    assert {"right", "wrong", "none"} <= set(want)  # the design exercises every filter
    for p, c, s in zip(data["problems"], correct, scores, strict=True):
        order = np.argsort(-s, kind="stable")
        groups = entries(c, order)
        rank = {j: r + 1 for r, j in enumerate(order.tolist())}
        assert p["d"] == len(groups)
        assert [x["r"] for x in p["s"]] + [r[0] for r in p["rest"]] == sorted(rank[g[0]] for g in groups)
        assert [x["i"] for x in p["s"][:5]] == [g[0] for g in groups[:5]]
        assert [x["ok"] for x in p["s"][:5]] == [int(c[g[0]]) for g in groups[:5]]
        assert p["nc"] == int(c.sum())
        first_ok = next((k for k, g in enumerate(groups) if c[g[0]]), None)
        if first_ok is not None and first_ok >= 5:  # the best-ranked correct entry is shown in full too
            assert len(p["s"]) == 6 and p["s"][5]["i"] == groups[first_ok][0] and p["s"][5]["ok"] == 1
        else:
            assert len(p["s"]) == min(5, len(groups))
        assert p["g"]["ok"] == int(c[0])


def test_identical_samples_of_a_problem_are_one_entry_with_their_count(site):
    data = embedded(site["html"])
    correct = site["correct"][:30]
    several = 0
    for p, c in zip(data["problems"], correct, strict=True):
        counts = [x.get("c", 1) for x in p["s"]] + [r[5] for r in p["rest"]]
        assert sum(counts) == 12  # every sample is counted once
        texts = [x["t"] for x in p["s"]]
        assert len(set(texts)) == len(texts)  # no text shown twice
        right = [x.get("c", 1) for x in p["s"] if x["ok"]] + [r[5] for r in p["rest"] if r[3]]
        assert right == ([int(c.sum())] if c.any() else [])  # all right samples are one entry, counted
        several += c.sum() > 1
    assert several > 0  # the design has problems with several identical samples


def test_token_values_are_aligned_with_the_decoded_text(site):
    data = embedded(site["html"])
    shown = [s for p in data["problems"] for s in p["s"]]
    assert shown and all("L" in s for s in shown)
    for s in shown:
        lens = [H.ALPHABET.index(c) for c in s["L"]]
        assert sum(lens) == len(s["t"]) and all(n > 0 for n in lens)
        assert len(s["v"]) == len(lens)
        # fake_run's token values rise linearly from 0.5 to the sample's score
        first, last = (H.ALPHABET.index(c) / 61 for c in (s["v"][0], s["v"][-1]))
        assert abs(first - 0.5) <= 0.01 and abs(last - s["sc"]) <= 0.01


def test_compact_encodings():
    assert H.encode_values([0.0, 0.5, 1.2, -0.3, float("nan"), None, 1.0], 6) == "0Uz0--"
    assert H.encode_values([0.25], 3) == H.ALPHABET[15]
    assert H.encode_lengths(["ab", "", "\u00e9", "\U0001f600"]) == "2012"  # an emoji is 2 UTF-16 units
    assert H.encode_lengths(["x" * 70, "y"]) == [70, 1]


def test_token_pieces_split_characters():
    class Bytes:
        """Byte-level decoding: a lone byte of a multi-byte character decodes to U+FFFD."""

        def batch_decode(self, seqs, **kw):
            return [bytes(s).decode("utf-8", errors="replace") for s in seqs]

    text = "caf\u00e9 5\u20ac"
    ids = list(text.encode("utf-8"))
    pieces = H.token_pieces(Bytes(), ids, text)
    assert "".join(pieces) == text and len(pieces) == len(ids)
    assert pieces[3:5] == ["", "\u00e9"] and pieces[-3:] == ["", "", "\u20ac"]


def test_page_is_self_contained(site):
    page = site["html"]
    assert not re.search(r"https?://", page)
    assert not re.search(r"""\b(src|href)\s*=\s*["'](?!data:|#)""", page)
    assert "<style>" in page and "<script>" in page
    assert site["page"].stat().st_size < 2_000_000


def test_without_a_tokenizer_samples_are_plain_text(tiny_cfg):
    build_run(tiny_cfg, tokenizer=None)
    data = load_run(tiny_cfg, sample_columns=["text", "tokens"], score_columns=["token_values"])
    payload = H.viewer_data(data, evaluate.compute(data, bootstrap=0), max_problems=3, max_samples=2,
                            tokenizer=H.load_tokenizer(tiny_cfg.run_dir))
    assert len(payload["problems"]) == 3
    assert all("p" not in s and s["t"] for p in payload["problems"] for s in p["s"])


class _DropSpaceTokenizer:
    """Decodes like SentencePiece: the first token of a sequence loses its leading space."""

    def __init__(self, words: list[str], can_encode: bool):
        self.words = words
        self.longest = 0
        if can_encode:
            self.encode = lambda text, add_special_tokens=False: [self.words.index(text)]

    def batch_decode(self, seqs, **kw):
        return [self.decode(s, **kw) for s in seqs]

    def decode(self, ids, **kw):
        self.longest = max(self.longest, len(ids))
        return "".join(self.words[i] for i in ids).lstrip(" ")


def test_token_pieces_for_tokenizers_that_drop_a_lone_leading_space():
    words = ["Tom", " has", " 3", " apples", ".", "x"]
    want = ["Tom", " has", " 3", " apples", "."]
    anchored = _DropSpaceTokenizer(words, can_encode=True)
    assert H.token_pieces(anchored, [0, 1, 2, 3, 4], "Tom has 3 apples.") == want
    assert anchored.longest == 2  # decoded after the anchor token, not by prefixes
    by_prefix = _DropSpaceTokenizer(words, can_encode=False)
    assert H.token_pieces(by_prefix, [0, 1, 2, 3, 4], "Tom has 3 apples.") == want
    assert by_prefix.longest == 5
    assert H.token_pieces(by_prefix, [0, 1], "something else") is None
    assert H.token_pieces(by_prefix, [], "") is None
    got = H.token_pieces_batch(anchored, [[0, 1], [], [2, 3]], ["Tom has", "", " 3 apples"])
    assert got == [["Tom", " has"], None, [" 3", " apples"]]


def test_json_cannot_break_out_of_its_script_element():
    payload = {"run": "x", "problems": [{"q": "</script><script>alert(1)</script><!--"}]}
    page = H.render_html(payload)
    assert "</script><script>alert(1)" not in page
    assert embedded(page)["problems"][0]["q"] == payload["problems"][0]["q"]


# --------------------------------------------------------------------------- in a real browser

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def dump(tmp_path: Path, page: Path, fragment: str = "") -> tuple[str, str]:
    """The DOM after the page's scripts ran, and the browser's console lines."""
    r = chromium(tmp_path, page.as_uri() + fragment, "--virtual-time-budget=3000", "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    console = [line for line in r.stderr.splitlines() if ":CONSOLE" in line]
    return r.stdout, "\n".join(console)


def shown_cards(dom: str) -> list[tuple[str, str]]:
    return re.findall(r'<details class="problem" data-id="([^"]+)" data-cat="([a-z]+)"', dom)


@pytest.mark.browser
@browser
def test_page_loads_without_console_errors(site, tmp_path):
    dom, console = dump(tmp_path, site["page"])
    assert console == ""
    assert 'data-ready="1"' in dom and "data-errors" not in dom
    cards = shown_cards(dom)
    assert len(cards) == 30
    # the first card is open and rendered: ranked samples with per-token colour spans
    assert dom.count('class="sample ') >= 5 and 'class="tok"' in dom
    assert "showing 30 of 30 matching" in dom


@pytest.mark.browser
@browser
def test_filters_and_search_through_the_url_hash(site, tmp_path):
    want = categories(site["correct"][:30], site["scores"][:30])
    for cat, label in (("wrong", "verifier picked wrong"), ("none", "no correct sample"),
                       ("right", "verifier picked right")):
        dom, console = dump(tmp_path, site["page"], f"#filter={cat}")
        assert console == ""
        cards = shown_cards(dom)
        assert len(cards) == want.count(cat) > 0, cat
        assert {c for _, c in cards} == {cat}
        assert f'data-filter="{cat}"' in dom and f">{label}<" in dom
    dom, _ = dump(tmp_path, site["page"], "#q=test-00007")
    assert [i for i, _ in shown_cards(dom)] == ["test-00007"]
    dom, _ = dump(tmp_path, site["page"], "#filter=none&q=no+such+question")
    assert shown_cards(dom) == [] and "no problem matches" in dom


@pytest.mark.browser
@browser
def test_hostile_text_is_shown_as_text(tmp_path):
    payload = {"run": "x", "n_problems": 1, "n_samples": 1, "shown_problems": 1, "headline": [],
               "problems": [{"id": "test-00000", "q": "</script><img src=x onerror=alert(1)>", "ref": "1",
                             "sol": "#### 1", "cat": "none", "n": 1, "nc": 0, "g": None, "rest": [],
                             "s": [{"r": 1, "i": 0, "a": None, "ok": 0, "sc": 0.5, "t": "<b>bold</b>"}]}]}
    page = tmp_path / "hostile.html"
    page.write_text(H.render_html(payload))
    dom, console = dump(tmp_path, page)
    assert console == "" and 'data-ready="1"' in dom
    assert "&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in dom and "&lt;b&gt;bold&lt;/b&gt;" in dom
    assert "<img" not in dom


@pytest.mark.browser
@browser
def test_screenshot_is_not_blank(site, tmp_path):
    shot = tmp_path / "shot.png"
    r = chromium(tmp_path, site["page"].as_uri(), "--window-size=1100,900", f"--screenshot={shot}")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    assert img.shape[:2] == (900, 1100)
    assert img.std() > 10
    # text, badges and token colours: many distinct colours, not one background
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 50


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node (a syntax check of the viewer's script)")
def test_the_viewers_script_parses(tmp_path):
    # Without chromium the browser tests skip; node still catches a script that would not run at all.
    from gsmv.report.html import render_html

    payload = {"run": "x", "n_problems": 1, "n_samples": 1, "shown_problems": 0,
               "headline": [["test@1 (greedy)", 0.25]], "problems": []}
    scripts = re.findall(r"<script>(.*?)</script>", render_html(payload), re.S)
    assert scripts
    (tmp_path / "viewer.js").write_text("\n".join(scripts))
    subprocess.run(["node", "--check", str(tmp_path / "viewer.js")], check=True)


def test_step_marks_name_the_true_first_wrong_step_and_the_verifiers_pointer():
    from gsmv.data.gsm8k import Problem

    problem = Problem("p", "q?", "Ali has <<3*4=12>>12.\n#### 12", "12")
    pieces = ["<<", "2+2=4", ">>", "4", " <<", "4*3=12", ">>", "12"]
    values = [0.9, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2]
    marks = H._step_marks(pieces, values, problem, threshold=0.5)
    assert marks["st"] == [["4", 0, 0.8], ["12", 1, 0.3]]
    assert marks["fw"] == 0 and marks["pw"] == 1  # wrong at step 1 (4 is no reference value); pointed at step 2
    assert "pw" not in H._step_marks(pieces, values, problem, threshold=None)


def test_viewer_marks_steps_on_a_task_with_step_truth(tiny_cfg, tiny_tokenizer):
    tiny_cfg.data.source = "synth"
    tiny_cfg.data.synth.train_size, tiny_cfg.data.synth.test_size, tiny_cfg.data.val_size = 40, 6, 5
    build_run(tiny_cfg, tokenizer=tiny_tokenizer)
    data = load_run(tiny_cfg, sample_columns=["text", "tokens"], score_columns=["token_values"])
    results = {**evaluate.compute(data, bootstrap=0), "steps": {"localization": {"threshold": 0.6}}}
    payload = H.viewer_data(data, results, max_problems=6, max_samples=3, tokenizer=tiny_tokenizer)
    marked = [s for p in payload["problems"] for s in p["s"] if "st" in s]
    assert marked and all(s["fw"] == -1 for s in marked)  # the fake samples copy the reference's steps
    assert all(s["st"] and all(ok == 1 for _, ok, _ in s["st"]) for s in marked)
    # "sd": some shown sample whose pointer differs from the truth (here: any step valued below 0.6)
    assert any(p["sd"] for p in payload["problems"]) == any(s["pw"] != -1 for s in marked)
    html = H.render_html(payload)
    assert 'data-filter="differ"' in html
