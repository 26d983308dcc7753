import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from oar_verl.core import offsets as offsets_module
from oar_verl.core.offsets import (
    _byte_table,
    _checked_table,
    _incremental_offsets,
    _prefix_offsets,
    _token_pieces,
    batch_token_offsets,
    token_offsets,
)
from oar_verl.tiny.models import byte_tokenizer
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


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.tuples(TEXTS, st.integers(0, 2), st.booleans()), max_size=7), unknown=st.booleans())
def test_a_batch_equals_each_row_alone(tokenizer, texts, unknown):
    """Rows gathered blockwise (3 a block here) give each row's own offsets: cut characters,
    special tokens, empty rows and an id outside the vocabulary among them."""
    rows = [tokenizer(text, add_special_tokens=False)["input_ids"] for text, _, _ in texts]
    rows = [
        ids[: max(0, len(ids) - cut)] + ([tokenizer.convert_tokens_to_ids("<|im_end|>")] if special else [])
        for ids, (_, cut, special) in zip(rows, texts)
    ]
    if unknown and rows:
        rows[-1] = rows[-1] + [len(tokenizer) + 5]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(offsets_module, "ROWS_PER_BLOCK", 3)
        batch = batch_token_offsets(tokenizer, rows)
    assert len(batch) == len(rows)
    for ids, offsets in zip(rows, batch):
        expected = reference_offsets(tokenizer, ids)
        assert offsets.text == expected.text
        assert offsets.starts.tolist() == expected.starts.tolist() and offsets.ends.tolist() == expected.ends.tolist()


def test_added_tokens_decode_as_the_byte_level_decoder_makes_them():
    """An added token made of byte symbols decodes to their bytes ("Ġzz" -> " zz"), one with
    other characters to its own UTF-8; the table agrees with `decode` on both."""
    tokenizer = byte_tokenizer(merges=[])
    tokenizer.add_tokens(["Ġzz", "<tool>"])
    ids = tokenizer("a", add_special_tokens=False)["input_ids"] + tokenizer.convert_tokens_to_ids(["Ġzz", "<tool>"])
    assert _byte_table(tokenizer) is not None
    offsets = token_offsets(tokenizer, ids)
    assert offsets.text == tokenizer.decode(ids, skip_special_tokens=True) == "a zz<tool>"
    assert covered(offsets) == ["a", " zz", "<tool>"]


def test_a_table_that_disagrees_with_decode_is_refused(tokenizer):
    pieces = _token_pieces(tokenizer.backend_tokenizer)
    assert _checked_table(tokenizer.backend_tokenizer, pieces) is not None
    wrong = tokenizer.convert_tokens_to_ids("a")
    pieces[wrong] = b"b"
    assert _checked_table(tokenizer.backend_tokenizer, pieces) is None


def test_other_tokenizers_take_the_streaming_decode():
    assert _byte_table(SpaceCleaningTokenizer()) is None
