from oar_verl.core.offsets import _incremental_offsets, token_offsets


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
