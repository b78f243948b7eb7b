"""Does a run's yes/no answer depend on the image? The log-odds of "yes" over "no" at the first
answer token, teacher-forced, on the eval split's exists and position questions, grouped by the
true answer. A model that reads the image gives the "yes" questions clearly higher log-odds than
the "no" ones; equal means and a small spread mean the answer is one constant prior.

A run trained with train.vqa_rationale is probed in its own answer form: the true description
is teacher-forced and the log-odds are read at the answer token after "answer:", so the probe
says whether the model matches the question against a correct description.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/yes_no_probe.py RUN [--questions 600]
"""

from __future__ import annotations

import argparse
import statistics
from itertools import islice

import torch

from unimm.data.sequence import collate
from unimm.evaluate.common import normalise_answer
from unimm.pipeline import load_checkpoint
from unimm.world.tasks import world_samples

YES_NO = ("exists", "position")


def answer_log_odds(model, samples) -> list[float]:
    """Per sample, the log-odds of "yes" over "no" at its last yes/no answer token (after any
    reasons), teacher-forced."""
    yes, no = model.text_tok.encode("yes")[0], model.text_tok.encode("no")[0]
    out: list[float] = []
    with torch.no_grad():
        for i in range(0, len(samples), 32):
            chunk = samples[i : i + 32]
            batch = collate(model.build(chunk), model.text_tok.pad_id, device=model.device)
            logits = model.train_logits(
                batch.ids[:, :-1], batch.ids[:, 1:], model.train_mask(batch)
            )
            targets = batch.ids[:, 1:]
            is_answer = batch.loss_mask[:, 1:] & ((targets == yes) | (targets == no))
            for r in range(len(chunk)):
                pos = int(is_answer[r].nonzero()[-1])  # the yes/no token (after any reasons)
                lp = logits[r, pos].float().log_softmax(-1)
                out.append((lp[yes] - lp[no]).item())
    return out


def log_odds(model, samples) -> dict[tuple[str, str], list[float]]:
    out: dict[tuple[str, str], list[float]] = {}
    for s, lo in zip(samples, answer_log_odds(model, samples), strict=True):
        key = (s.meta["qtype"], normalise_answer(s.segments[2].text))
        out.setdefault(key, []).append(lo)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--questions", type=int, default=600, help="eval VQA samples to draw from")
    args = ap.parse_args()
    model, _ = load_checkpoint(args.run)
    if not hasattr(model, "train_mask"):
        raise SystemExit(f"{model.recipe}: the probe reads next-token logits (chameleon, janus)")
    reasons = model.parts.config.train.vqa_rationale
    stream = world_samples("eval", 0, {"vqa": 1.0}, "exclude", rationale=reasons)
    samples = [s for s in islice(stream, args.questions) if s.meta["qtype"] in YES_NO]
    print("| question type | truth | n | log-odds yes/no, mean | sd |")
    print("|---|---|---|---|---|")
    for (qtype, truth), v in sorted(log_odds(model, samples).items()):
        print(f"| {qtype} | {truth} | {len(v)} | {statistics.mean(v):.3f} | "
              f"{statistics.pstdev(v):.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
