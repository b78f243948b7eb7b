import numpy as np
import pytest
import torch

from unimm.data.sample import Image, Sample, Text
from unimm.data.sequence import IMAGE, TEXT, build_sequence, collate
from unimm.model.masks import block_causal_mask
from unimm.tokenizers.text import TextTokenizer


@pytest.fixture(scope="module")
def tok():
    return TextTokenizer.train(["a red circle", "what color is it?", "red"] * 20, vocab_size=280)


def img():
    return Image(np.zeros((8, 8, 3), np.uint8))


CODES = [[300, 301], [302, 303]]  # two 2-code images, ids already offset


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


def test_multi_image_interleaved_layout_is_the_written_one(tok):
    """The world's interleaved sample (caption, image, instruction, edited image, question,
    answer): every token's id, loss flag, modality and image block, written out; then the same
    segments as a chat history (no targets, the answer an assistant reply) train nothing."""
    cap, ins, q, a = (tok.encode(t) for t in ("a red circle", "what color", "is it?", "red"))
    segs = [Text("a red circle"), img(), Text("what color"), img(), Text("is it?"), Text("red")]
    seq = build_sequence(Sample(segs, targets=(1, 3, 5), task="interleaved"), tok, CODES)
    T, I = TEXT, IMAGE  # noqa: E741
    rows = (  # (id, trained, modality, block)
        [(tok.bos_id, 0, T, 0)]
        + [(t, 0, T, 0) for t in cap]
        + [(tok.boi_id, 0, T, 0), (300, 1, I, 1), (301, 1, I, 1), (tok.eoi_id, 1, T, 0)]
        + [(t, 0, T, 0) for t in ins]
        + [(tok.boi_id, 0, T, 0), (302, 1, I, 2), (303, 1, I, 2), (tok.eoi_id, 1, T, 0)]
        + [(t, 0, T, 0) for t in q]
        + [(tok.assistant_id, 0, T, 0)]
        + [(t, 1, T, 0) for t in a]
        + [(tok.eos_id, 1, T, 0)]
    )
    got = list(zip(seq.ids, map(int, seq.loss_mask), seq.modality, seq.image_block, strict=True))
    assert got == rows
    history = [*segs[:5], Text("red", role="assistant")]
    prompt = build_sequence(Sample(history, targets=(), task="chat"), tok, CODES)
    assert prompt.ids == seq.ids and prompt.image_block == seq.image_block
    assert not any(prompt.loss_mask)
    # The continuous recipes' mask reads these blocks: causal, plus each image's codes whole.
    first, second = 1 + len(cap) + 1, 1 + len(cap) + 4 + len(ins) + 1
    ref = [[k <= r for k in range(len(rows))] for r in range(len(rows))]
    for r, k in [(first, first + 1), (second, second + 1)]:
        ref[r][k] = True
    blocks = torch.tensor([seq.image_block]) - 1
    assert block_causal_mask(blocks)[0, 0].tolist() == ref


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
