"""Settings of the chameleon recipe (RunConfig.chameleon); apart from the recipe so the run config
can name them without importing model code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(kw_only=True)
class ChameleonConfig:
    # The learned (row, col) embedding added to image slots (module docstring of
    # unimm.recipes.chameleon). A Hugging Face Chameleon has none, so its import turns it off.
    image_pos_embed: bool = True
    # Where the image codes sit in the vocabulary. "after_text": code c is id T + c (T the text
    # tokenizer's size), unimm's layout. "tokenizer": code c is the text tokenizer's own token
    # "IMGIMG" + c's digits as letters A-J + "Z", as in a Hugging Face Chameleon, whose 8192
    # codes are interleaved in its 65536-id vocabulary (transformers' vocabulary_map / img2bpe).
    code_ids: Literal["after_text", "tokenizer"] = "after_text"
    # How the next-token loss pools its targets (docs/LOG.md, "Quality per CPU-minute").
    # "token": one mean over every target token; in the default task mixture image codes are
    # about 96 % of them, so answers and captions get about 4 % of the gradient. "modality": a
    # mean over text targets and a mean over image-code targets, added with the weights below
    # (Show-o sums a text and an image term; BAGEL weights its CE and MSE terms).
    loss_pooling: Literal["token", "modality"] = "token"
    text_loss_weight: float = 1.0
    image_loss_weight: float = 1.0
    # Weight of image targets whose code is one that a blank canvas encodes to, relative to the
    # object codes' 1.0: most of an image is background, which is easy and not what prompts ask.
    background_weight: float = 1.0
    # Under "token" pooling, the weight of each text target (answers, captions) in the one
    # weighted mean, relative to an object code's 1.0. Text is about 4 % of the targets of the
    # default mixture; a weight of a few moves its share of the gradient to 10-20 % without
    # the "modality" pooling's half, which starved drawing (docs/LOG.md).
    text_token_weight: float = 1.0
    # True: each image code's embedding and output row also get a learned projection of the
    # code's prototype, the mean pixels of the patches it has encoded in training (a running
    # mean over the training batches, saved with the weights). Codes that look alike then start
    # alike, and a code's colour is readable before its own vector has learned anything.
    code_prototypes: bool = False
    # True: the input at each position that is about to produce an image code also carries
    # (through a zero-initialised table of its own) the code that the sequence's previous image
    # has at that cell. An edit's target then sees, at every step, what its source shows in the
    # place it is drawing, so "keep everything else" is a copy instead of something recalled
    # through attention. Images with no image before them (text-to-image) get nothing.
    copy_source: bool = False
    # True (with copy_source): a copy switch at the output (a pointer-generator's, See et al.,
    # arXiv 1704.04368). Where the next token is an image code with a cell in the previous
    # image, the model's distribution becomes (1 - g) softmax(logits) + g [code = the source
    # code there], g = sigmoid(w . h + b) learned per position. Keeping a cell of an edit's
    # source then costs one scalar instead of recalling its code among thousands.
    copy_gate: bool = False
    # Share of the input codes of a target image that follows another image (an edit's
    # target) replaced by random codes in training (the targets stay): copying must then rest
    # on the instruction and the cell, not on the previous code having been a copy, which
    # sampling does not keep up (exposure bias). Needs copy_source.
    copy_input_noise: float = 0.0
    # True: the codes of an image the model reads (a VQA or caption image, an edit's source:
    # any image that is not a target) attend to each other in both directions, as in
    # Transfusion's and Show-o's image blocks, so every code's state can hold the whole
    # object; images the model draws stay causal (each code is a next-token target).
    bidirectional_inputs: bool = False

    def __post_init__(self) -> None:
        if self.loss_pooling not in ("token", "modality"):
            raise ValueError(
                f"chameleon.loss_pooling must be 'token' or 'modality', got {self.loss_pooling!r}"
            )
        if not 0.0 <= self.copy_input_noise < 1.0:
            raise ValueError(
                f"chameleon.copy_input_noise must be in [0, 1), got {self.copy_input_noise}"
            )
        weights = (
            self.text_loss_weight,
            self.image_loss_weight,
            self.background_weight,
            self.text_token_weight,
        )
        if min(weights) < 0:
            raise ValueError(f"chameleon loss weights must be >= 0, got {weights}")
