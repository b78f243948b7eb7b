import pytest

from unimm.tokenizers.text import SPECIAL_TOKENS, TextTokenizer

CORPUS = [
    "a red circle left of a blue square",
    "what color is the square?",
    "two green triangles and a purple diamond",
    "how many circles are there?",
] * 50


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(CORPUS, vocab_size=400)


def test_special_tokens_come_first_in_order(tok):
    assert [tok._tok.token_to_id(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 1, 2)


@pytest.mark.parametrize("text", CORPUS[:4] + ["unseen wörds, émoji 🙂 and 123"])
def test_round_trip(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_world_words_are_compact(tok):
    assert len(tok.encode("a red circle left of a blue square")) <= 9


def test_save_load_and_corrupt_file(tok, tmp_path):
    tok.save(tmp_path)
    again = TextTokenizer.load(tmp_path)
    assert again.encode(CORPUS[0]) == tok.encode(CORPUS[0])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt text tokenizer"):
        TextTokenizer.load(tmp_path)
    with pytest.raises(ValueError, match="missing text tokenizer"):
        TextTokenizer.load(tmp_path / "nowhere")


def test_marker_aliases_use_the_tokenizer_own_tokens_and_round_trip(tmp_path):
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    words = {w: i for i, w in enumerate(["<s>", "</s>", "<img>", "a", "b"])}
    raw = Tokenizer(models.WordLevel(words, "a"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.add_special_tokens([AddedToken(t, special=True) for t in ("<s>", "</s>", "<img>")])
    rest = [t for t in SPECIAL_TOKENS if t not in ("<|bos|>", "<|eos|>", "<|boi|>")]
    raw.add_special_tokens([AddedToken(t, special=True) for t in rest])
    markers = {"<|bos|>": "<s>", "<|eos|>": "</s>", "<|boi|>": "<img>"}
    tok = TextTokenizer(raw, markers)
    assert (tok.bos_id, tok.eos_id, tok.boi_id) == (0, 1, 2) and tok.vocab_size == 5 + len(rest)
    tok.save(tmp_path)
    again = TextTokenizer.load(tmp_path)
    assert again.markers == markers and (again.bos_id, again.boi_id) == (0, 2)
    with pytest.raises(ValueError, match="unknown markers"):
        TextTokenizer(raw, {"<|image|>": "<img>"})
    with pytest.raises(ValueError, match="lacks unimm's special tokens"):
        TextTokenizer(raw, {"<|bos|>": "<nothing>"})
