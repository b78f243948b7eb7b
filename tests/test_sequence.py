import numpy as np
import pytest

from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import IMAGE, build_sequence, collate
from unimm.tokenizers.text import TextTokenizer


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(["a red circle", "what color is it?", "red"] * 20, vocab_size=280)


def img():
    return Image(np.zeros((8, 8, 3), np.uint8))


def test_vqa_layout_and_loss_mask(tok):
    s = Sample([img(), Text("what color is it?"), Text("red")], targets=(2,), task="vqa")
    seq = build_sequence(s, tok, [[300, 301, 302, 303]])
    q, a = tok.encode("what color is it?"), tok.encode("red")
    expect = [tok.bos_id, tok.boi_id, 300, 301, 302, 303, tok.eoi_id, *q, tok.assistant_id, *a]
    assert seq.ids == expect + [tok.eos_id]
    # Only the answer and its <eos> are trained.
    assert [i for i, m in zip(seq.ids, seq.loss_mask) if m] == a + [tok.eos_id]
    assert [m for m in seq.modality].count(IMAGE) == 4
    assert seq.image_block[2:6] == [1, 1, 1, 1] and seq.image_block[6] == 0


def test_t2i_layout_and_condition_dropout(tok):
    s = Sample([Text("a red circle"), img()], targets=(1,), task="t2i")
    seq = build_sequence(s, tok, [[300, 301]])
    cap = tok.encode("a red circle")
    assert seq.ids == [tok.bos_id, *cap, tok.boi_id, 300, 301, tok.eoi_id]
    assert [i for i, m in zip(seq.ids, seq.loss_mask) if m] == [300, 301, tok.eoi_id]
    dropped = build_sequence(s, tok, [[300, 301]], drop_text=True)
    assert dropped.ids == [tok.bos_id, tok.boi_id, 300, 301, tok.eoi_id]


def test_code_count_must_match(tok):
    s = Sample([img(), img()], targets=(1,), task="edit")
    with pytest.raises(ValueError, match="2 images but 1"):
        build_sequence(s, tok, [[300]])


def test_collate_right_pads(tok):
    a = build_sequence(Sample([Text("red")], (0,), "t"), tok, [])
    b = build_sequence(Sample([img()], (0,), "t"), tok, [[300, 301, 302]])
    batch = collate([a, b], tok.pad_id)
    assert batch.ids.shape == (2, max(len(a.ids), len(b.ids)))
    assert batch.valid.sum() == len(a.ids) + len(b.ids)
    assert (batch.ids[~batch.valid] == tok.pad_id).all()
    assert not batch.loss_mask[~batch.valid].any()
    with pytest.raises(ValueError, match="max_seq_len"):
        collate([a, b], tok.pad_id, max_len=3)
