"""Heatmap data, colour scale, HTML escaping and the PNG, without a browser."""

from html.parser import HTMLParser

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from oar_verl.tiny import byte_tokenizer
from oar_verl.viz import TokenHeatmap, render_html, render_png, weight_colour
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
