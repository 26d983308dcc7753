from hypothesis import given, settings
from hypothesis import strategies as st

from oar_verl.core.offsets import _byte_table, _incremental_offsets, _prefix_offsets, token_offsets
from tests.qwen_vocabulary import qwen_tokenizer


def covered(offsets):
    return [offsets.text[s:e] for s, e in zip(offsets.starts, offsets.ends)]


def test_ascii_and_merged_tokens(tokenizer):
    ids = tokenizer("ab\n#### 12", add_special_tokens=False)["input_ids"]
    offsets = token_offsets(tokenizer, ids)
    assert offsets.text == "ab\n#### 12"
    assert covered(offsets) == [tokenizer.decode([i]) for i in ids]
    assert "####" in covered(offsets)


def test_multibyte_characters_cover_their_bytes(tokenizer):
    text = "é€x"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 6  # 2 + 3 bytes + x
    offsets = token_offsets(tokenizer, ids)
    assert offsets.text == text
    assert covered(offsets) == ["é", "é", "€", "€", "€", "x"]


def test_special_tokens_cover_nothing(tokenizer):
    ids = tokenizer("a", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    offsets = token_offsets(tokenizer, ids)
    assert offsets.text == "a" and covered(offsets) == ["a", ""]


def test_response_cut_inside_a_character(tokenizer):
    ids = tokenizer("x€", add_special_tokens=False)["input_ids"][:-1]
    offsets = token_offsets(tokenizer, ids)
    assert offsets.text == tokenizer.decode(ids, skip_special_tokens=True)
    assert offsets.ends[-1] == len(offsets.text)


class SpaceCleaningTokenizer:
    """Decodes with a cleanup that removes a space before "." across tokens, so streamed
    pieces do not add up to the full text and the exact prefix method takes over."""

    all_special_ids = []
    pieces = {0: "a ", 1: ".", 2: "b"}

    def decode(self, ids, skip_special_tokens=True):
        return "".join(self.pieces[i] for i in ids).replace(" .", ".")


def test_fallback_when_pieces_disagree_with_the_full_text():
    tokenizer = SpaceCleaningTokenizer()
    assert _incremental_offsets(tokenizer, [0, 1, 2], "a.b") is None
    offsets = token_offsets(tokenizer, [0, 1, 2])
    assert offsets.text == "a.b"
    assert covered(offsets) == ["a", ".", "b"]


def reference_offsets(tokenizer, ids):
    """The streaming decode (or the exact prefix method), without the byte-level fast path."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    return _incremental_offsets(tokenizer, ids, text) or _prefix_offsets(tokenizer, ids, text)


TEXTS = st.text(alphabet=st.sampled_from(list("ab #\n0123456789.") + ["é", "€", "中", "文", "✓", "😀", "ñ", "—"]), max_size=40)


def check_same_offsets(tokenizer, text, cut, special):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = ids[: max(0, len(ids) - cut)]
    if special:
        ids = ids[: len(ids) // 2] + [tokenizer.convert_tokens_to_ids("<|im_end|>")] + ids[len(ids) // 2 :]
    fast, expected = token_offsets(tokenizer, ids), reference_offsets(tokenizer, ids)
    assert fast.text == expected.text
    assert fast.starts.tolist() == expected.starts.tolist() and fast.ends.tolist() == expected.ends.tolist()


@settings(max_examples=300)
@given(text=TEXTS, cut=st.integers(0, 2), special=st.booleans())
def test_byte_level_fast_path_equals_the_streaming_decode(tokenizer, text, cut, special):
    assert _byte_table(tokenizer) is not None  # the tests' byte-level tokenizer takes the fast path
    check_same_offsets(tokenizer, text, cut, special)


@settings(max_examples=300, deadline=None)
@given(text=TEXTS, cut=st.integers(0, 2), special=st.booleans())
def test_fast_path_on_qwen_vocabulary(text, cut, special):
    tokenizer = qwen_tokenizer()
    assert _byte_table(tokenizer) is not None
    check_same_offsets(tokenizer, text, cut, special)


def test_other_tokenizers_take_the_streaming_decode():
    assert _byte_table(SpaceCleaningTokenizer()) is None
