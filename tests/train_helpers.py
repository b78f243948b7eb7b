"""A tiny model and world stream for the scale/fault tests (run also as a subprocess script)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import torch

from unimm.presets import get_run_config
from unimm.recipes.chameleon import ChameleonModel
from unimm.recipes.parts import Parts
from unimm.tokenizers.text import TextTokenizer
from unimm.tokenizers.vq import VQTokenizer
from unimm.train.config import TrainConfig
from unimm.world.tasks import world_samples

CORPUS = ["a red circle", "a blue square left of a green triangle", "what color?", "red"] * 30


def tiny_model() -> ChameleonModel:
    torch.manual_seed(0)
    # Classifier-free-guidance dropout draws per micro-batch, so it differs between a batch of
    # B and two of B/2: off here, so the equality tests compare like with like.
    cfg = get_run_config("tiny", ["train.cfg_dropout=0"])
    text = TextTokenizer.train(CORPUS, cfg.text_vocab_size)
    image = VQTokenizer(cfg.vq).eval().requires_grad_(False)
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=text.vocab_size + image.codebook_size))
    return ChameleonModel(Parts(cfg, text, image))


def tiny_train_config(**kw) -> TrainConfig:
    # device=cpu: the equality tests compare CPU curves, on GPU machines too (where "auto" would
    # pick cuda for rank 0 and fail for a second process on a one-GPU machine).
    base = dict(steps=6, batch_size=4, warmup_steps=1, log_every=1, precision="fp32",
                cfg_dropout=0.0, lr=3e-3, device="cpu")  # fmt: skip
    return TrainConfig(**{**base, **kw})


def stream(start: int):
    return world_samples("train", 0, {"t2i": 0.5, "vqa": 0.5}, start=start)


if __name__ == "__main__":  # python tests/train_helpers.py OUT RESUME [key=value ...]
    from unimm.train.trainer import train_model

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))  # the parent's count
    out, resume = sys.argv[1], sys.argv[2] == "1"
    kw = {k: (v if k in ("parallel", "precision", "device") else float(v) if "." in v else int(v))
          for k, v in (a.split("=") for a in sys.argv[3:])}  # fmt: skip
    train_model(tiny_model(), tiny_train_config(**kw), stream, out, progress=False, resume=resume)
