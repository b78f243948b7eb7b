"""The sequence builder: lays a sample's segments into one token sequence.

Layout for recipes that put images into the token stream (Chameleon, Show-o, MMaDA):

    <bos> [text] <boi> code ... code <eoi> [text] <assistant> answer <eos>

- A target text segment is introduced by <assistant> and closed by <eos>, so an understanding
  prompt ends with <assistant> and the sampler stops at <eos>. A reply in a conversation's
  history (Text role "assistant") is laid out the same way, so a multi-turn prompt looks like
  the interleaved samples the model trained on; user text is plain.
- Every image is wrapped in <boi> ... <eoi>; an image-generation prompt ends with <boi>.
- loss_mask marks the tokens the model is trained to produce: a target text's tokens and its
  <eos>, a target image's codes and its <eoi>. Markers that open a target are given, not
  predicted, because at inference the prompt supplies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unimm.data.sample import Image, Sample, Text
from unimm.tokenizers.text import TextTokenizer

TEXT, IMAGE = 0, 1  # modality ids


@dataclass
class TokenSequence:
    ids: list[int]
    loss_mask: list[bool]
    modality: list[int]
    image_block: list[int]  # 0 outside images, k >= 1 inside the k-th image (markers excluded)


@dataclass
class TokenBatch:
    ids: torch.Tensor  # (B, T) long, right-padded with pad_id
    loss_mask: torch.Tensor  # (B, T) bool
    modality: torch.Tensor  # (B, T) long
    image_block: torch.Tensor  # (B, T) long
    valid: torch.Tensor  # (B, T) bool, False on padding


def build_sequence(
    sample: Sample,
    text_tok: TextTokenizer,
    image_codes: list[list[int]],
    drop_text: bool = False,
) -> TokenSequence:
    """`image_codes[k]` holds the vocabulary ids of the sample's k-th image, already offset.

    drop_text empties the non-target text segments (classifier-free guidance training: the
    model also learns the unconditional distribution, arXiv 2207.12598).
    """
    n_images = sum(isinstance(seg, Image) for seg in sample.segments)
    if n_images != len(image_codes):
        raise ValueError(f"sample has {n_images} images but {len(image_codes)} code lists")
    seq = TokenSequence([text_tok.bos_id], [False], [TEXT], [0])
    n_image = 0

    def put(ids: list[int], target: bool, modality: int = TEXT, block: int = 0) -> None:
        seq.ids += ids
        seq.loss_mask += [target] * len(ids)
        seq.modality += [modality] * len(ids)
        seq.image_block += [block] * len(ids)

    for i, seg in enumerate(sample.segments):
        target = i in sample.targets
        if isinstance(seg, Text):
            if target or seg.role == "assistant":
                put([text_tok.assistant_id], False)
                put(text_tok.encode(seg.text) + [text_tok.eos_id], target)
            elif not drop_text:
                put(text_tok.encode(seg.text), False)
        elif isinstance(seg, Image):
            codes = image_codes[n_image]
            n_image += 1
            put([text_tok.boi_id], False)
            put(codes, target, IMAGE, n_image)
            put([text_tok.eoi_id], target)
        else:
            raise TypeError(f"unknown segment type {type(seg).__name__}")
    return seq


def collate(
    seqs: list[TokenSequence],
    pad_id: int,
    max_len: int | None = None,
    device: torch.device | str | None = None,
) -> TokenBatch:
    """Right-pad sequences into one batch (causal attention never looks right, so right padding
    needs no attention mask in training). The batch is laid out on the CPU and lands on `device`
    (the model's, `UnifiedModel.device`) in one copy per field."""
    T = max(len(s.ids) for s in seqs)
    if max_len is not None and T > max_len:
        raise ValueError(f"sequence too long: {T} tokens, more than max_seq_len {max_len}")
    B = len(seqs)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((B, T), dtype=torch.bool)
    modality = torch.zeros((B, T), dtype=torch.long)
    block = torch.zeros((B, T), dtype=torch.long)
    valid = torch.zeros((B, T), dtype=torch.bool)
    for b, s in enumerate(seqs):
        n = len(s.ids)
        ids[b, :n] = torch.tensor(s.ids)
        loss_mask[b, :n] = torch.tensor(s.loss_mask)
        modality[b, :n] = torch.tensor(s.modality)
        block[b, :n] = torch.tensor(s.image_block)
        valid[b, :n] = True
    fields = (ids, loss_mask, modality, block, valid)
    return TokenBatch(*(t.to(device) for t in fields))
