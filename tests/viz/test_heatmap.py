"""Heatmap data, colour scale, HTML escaping and the PNG, without a browser."""

import html
from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from matplotlib.axes import Axes
from PIL import Image

from oar_verl.core import explain
from oar_verl.tiny.models import byte_tokenizer
from oar_verl.viz import READING_GUIDE, TokenHeatmap, fallback_reason, render_html, render_png, weight_colour
from oar_verl.viz.heatmap import BOOST, BYTE_PIECE, DAMP, weight_intensity


class TagCounter(HTMLParser):
    """Counts start tags, token spans, and collects the text of token spans."""

    def __init__(self):
        super().__init__()
        self.tags, self.token_texts, self._in_token = {}, [], False

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "span" and "tok" in (dict(attrs).get("class") or "").split():
            self.token_texts.append("")
            self._in_token = True

    def handle_endtag(self, tag):
        if tag == "span":
            self._in_token = False

    def handle_data(self, data):
        if self._in_token:
            self.token_texts[-1] += data


def heatmap_of(tokenizer, text: str, weights=None, prompt="p") -> TokenHeatmap:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    weights = weights if weights is not None else [1.0 + 0.1 * (k % 5) - 0.2 for k in range(len(ids))]
    return TokenHeatmap.build(tokenizer, ids, ["reasoning"] * len(ids), [0.5] * len(ids), weights, prompt=prompt, reward=1.0)


@given(st.lists(st.floats(0.0, 5.0), min_size=2, max_size=30))
def test_intensity_is_monotone_in_the_weight_and_zero_at_one(weights):
    low, high = min(min(weights), 1.0), max(max(weights), 1.0)
    ordered = sorted(weights)
    intensities = [weight_intensity(w, low, high) for w in ordered]
    assert all(a <= b for a, b in zip(intensities, intensities[1:]))
    assert weight_intensity(1.0, low, high) == 0.0
    assert all(-1.0 <= i <= 1.0 for i in intensities)


def test_colour_ends_of_the_scale():
    assert weight_colour(1.0, 0.1, 2.0) == (255, 255, 255)
    assert weight_colour(2.0, 0.1, 2.0) == BOOST
    assert weight_colour(0.1, 0.1, 2.0) == DAMP
    assert weight_colour(float("nan"), 0.1, 2.0) == (255, 255, 255)


def test_pieces_read_as_the_response_even_for_byte_pieces():
    tokenizer = byte_tokenizer()
    text = "naïve 3×4 = 12 ✓\n#### 12"
    heatmap = heatmap_of(tokenizer, text)
    assert len(heatmap.pieces) == len(text.encode("utf-8"))  # one token per byte
    assert "".join(heatmap.pieces).replace(BYTE_PIECE, "") == text
    assert "\ufffd" not in "".join(heatmap.pieces)


def test_special_tokens_show_their_name():
    tokenizer = byte_tokenizer()
    ids = tokenizer("ok", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    heatmap = TokenHeatmap.build(tokenizer, ids, ["tail"] * 3, [0.0] * 3, [1.0] * 3)
    assert heatmap.pieces == ["o", "k", "<|endoftext|>"]


def test_lengths_must_agree():
    with pytest.raises(ValueError, match="differ in length"):
        TokenHeatmap(pieces=["a"], token_ids=[1, 2], segments=["tail"], scores=[0.0], weights=[1.0])


def test_page_escapes_text_and_has_one_span_per_token():
    tokenizer = byte_tokenizer()
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)> & "q"\n#### 1'
    heatmap = heatmap_of(tokenizer, hostile, prompt="</pre><script>bad()</script>")
    page = render_html([heatmap, heatmap_of(tokenizer, "ab\n#### 2")], title="<b>t</b>")
    parser = TagCounter()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags and "b" not in parser.tags
    assert len(parser.token_texts) == len(heatmap.token_ids) + len("ab\n#### 2")
    assert "".join(parser.token_texts[: len(heatmap.token_ids)]).replace("\u21b5", "") == hostile
    assert parser.tags["section"] == 2


def test_png_shows_boost_and_damp_colours(tmp_path):
    tokenizer = byte_tokenizer()
    heatmap = heatmap_of(tokenizer, "abcdef\n#### 3", weights=[2.0, 0.1] + [1.0] * 11)
    path = render_png(heatmap, tmp_path / "h.png")
    image = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
    for colour in (BOOST, DAMP):
        assert (np.abs(image.astype(int) - np.array(colour)).sum(axis=1) < 6).sum() > 50, f"no {colour} area"
    with pytest.raises(ValueError, match="width"):
        render_png(heatmap, tmp_path / "x.png", width=3)


@pytest.fixture
def drawn_texts(monkeypatch):
    """The strings the PNG renderer draws, in order (a hook on matplotlib's `Axes.text`)."""
    drawn, text = [], Axes.text

    def recording(self, x, y, s, *args, **kwargs):
        drawn.append(s)
        return text(self, x, y, s, *args, **kwargs)

    monkeypatch.setattr(Axes, "text", recording)
    return drawn


def test_fallback_reason_of_explanations(model, tokenizer):
    reasons = [fallback_reason(explain(model, tokenizer, "q:\n", response, answer_pattern="gsm8k")) for response in
               ("so 2+3 is 5\n#### 5", "no answer", "#### 5")]  # fmt: skip
    assert reasons == ["", "the answer pattern finds no answer", "empty reasoning (the response starts with the answer's marker)"]
    result = explain(model, tokenizer, "q:\n", "#### 5", answer_pattern="gsm8k")
    assert TokenHeatmap.from_explanation(result, tokenizer).fallback == reasons[2]


def test_page_says_once_how_to_read_it_and_flags_each_response_not_reweighted():
    tokenizer = byte_tokenizer()
    reason = "the answer pattern finds no answer"
    fallen = TokenHeatmap.build(tokenizer, [97, 98], ["unsegmented"] * 2, [0.0] * 2, [1.0] * 2, fallback=reason)
    page = render_html([heatmap_of(tokenizer, "ab\n#### 2"), fallen, heatmap_of(tokenizer, "cd\n#### 3")])
    guide = f'<p class="guide">{html.escape(READING_GUIDE)}</p>'
    assert page.count(guide) == 1 and page.index(guide) < page.index("<section")
    assert all(part in READING_GUIDE for part in ("GRPO advantage", "more blame", "bridge, answer and tail keep weight 1", "per response"))
    sections = page.split("<section")[1:]
    note = f'<p class="fallback">not reweighted, all weights 1: {reason}</p>'
    assert [note in section for section in sections] == [False, True, False]


def test_png_has_the_reading_guide_as_a_caption_and_the_fallback_in_its_header(tmp_path, drawn_texts):
    tokenizer = byte_tokenizer()
    heatmap = heatmap_of(tokenizer, "abcdef\n#### 3")
    render_png(heatmap, tmp_path / "h.png", width=60)
    caption = drawn_texts[next(k for k, text in enumerate(drawn_texts) if text.startswith("How to read")) :]
    assert len(caption) > 1 and all(len(line) <= 60 for line in caption) and " ".join(caption) == READING_GUIDE  # wrapped, drawn last
    assert not any("not reweighted" in text for text in drawn_texts)
    drawn_texts.clear()
    fallen = TokenHeatmap.build(tokenizer, [97, 98], ["unsegmented"] * 2, [0.0] * 2, [1.0] * 2, fallback="empty reasoning")
    render_png(fallen, tmp_path / "f.png", width=60)
    assert "not reweighted, all weights 1: empty reasoning" in drawn_texts[:3]


def test_a_long_response_png_leaves_out_the_middle_of_its_reasoning_and_keeps_its_answer(tmp_path, drawn_texts):
    tokenizer = byte_tokenizer()
    reasoning = "".join(f"step {k}: add {k} and {k + 1}.\n" for k in range(60))
    text = reasoning + "#### 4321" + "\nand some more words after the answer" * 3
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # one token per character
    bridge = len(reasoning)
    segments = ["reasoning"] * bridge + ["bridge"] * 5 + ["answer"] * 4 + ["tail"] * (len(ids) - bridge - 9)
    heatmap = TokenHeatmap.build(tokenizer, ids, segments, [0.5] * len(ids), [1.0 + 0.1 * (k % 3) for k in range(len(ids))])
    full = Image.open(render_png(heatmap, tmp_path / "full.png", max_tokens=len(ids))).size
    drawn_texts.clear()
    short = Image.open(render_png(heatmap, tmp_path / "short.png", max_tokens=100)).size
    shown = "".join(drawn_texts).replace("\u21b5", "\n")
    assert shown.count("#### 4321") == 1 and text[-25:] in shown and text[:50] in shown  # answer, final lines, start
    assert "step 30:" not in shown
    markers = [k for k, text in enumerate(drawn_texts) if text.startswith("\u2026 ") and text.endswith(" tokens left out \u2026")]
    assert len(markers) == 2  # the middle of the reasoning, and the tail between the answer and the last quarter of max_tokens
    assert "".join(drawn_texts[markers[0] :]).replace("\u21b5", "\n").index("#### 4321") > 0
    assert len(ids) - sum(int(drawn_texts[k].split()[1]) for k in markers) == 100
    assert short[0] == full[0] and short[1] < full[1] / 2
