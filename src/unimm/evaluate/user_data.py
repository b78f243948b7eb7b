"""How a run does on the user's own data, where the scene-world benchmarks judge nothing.

    unimm eval-data runs/pets folder=/data/pets_val --out runs/pets/eval_data

Given held-out samples (any train.data source, read with the run's data policy):
- reconstruction: the image tokenizer's encode-decode of the images, PSNR and SSIM (Wang et
  al. 2004, 11-px Gaussian window): the ceiling of what the model can draw;
- captions and answers: the model's caption of each captioned image and its answer to each VQA
  question against the data's own, exact match and token F1 after SQuAD's normalisation
  (lower case, no punctuation, no articles; Rajpurkar et al. 2016, arXiv 1606.05250);
- generation: one image per caption, scored as a reconstruction of the real image (PSNR, SSIM:
  low for any new image, a check that it is on the data's pictures at all), by whether it
  lands nearer its own caption's image than other captions' images in the run's own feature
  space (unimm.evaluate.retrieval; the report names the space), and by a
  nearest-neighbour memorisation check (Carlini et al. 2023, arXiv 2301.13188, in pixels):
  each generated image's RMS distance to the closest of `pool` training images (the run's own
  train.data), next to the same distance of the real held-out images. Generations much closer
  to the training set than real held-out images are (ratio well under 1), or near copies (RMS
  under `copy_rms`), point to memorised training images.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from itertools import islice
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unimm.data.readers import BadSamples, build_source
from unimm.data.sample import Image, Sample, Text

COPY_RMS = 8.0  # RMS pixel distance (0-255) under which a generation counts as a near copy


# -- metrics ------------------------------------------------------------------------------------
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """(H, W, 3) uint8 images -> PSNR in dB (peak 255)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray, window: int = 11, sigma: float = 1.5) -> float:
    """Mean SSIM of two (H, W, 3) uint8 images, per channel with a Gaussian window."""
    x = torch.from_numpy(a).double().permute(2, 0, 1)[:, None]  # (3, 1, H, W)
    y = torch.from_numpy(b).double().permute(2, 0, 1)[:, None]
    r = torch.arange(window, dtype=torch.float64) - window // 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2)[None, None]  # (1, 1, k, k)
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)  # valid windows only
    var_x = F.conv2d(x * x, w) - mu_x**2
    var_y = F.conv2d(y * y, w) - mu_y**2
    cov = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return float(s.mean())


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    p, r = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def nearest_rms(images: np.ndarray, pool: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(N, H, W, 3) and (M, H, W, 3) uint8 -> (N,) RMS pixel distance to the closest pool image."""
    a = torch.from_numpy(images.reshape(len(images), -1)).double()
    best = torch.full((len(images),), float("inf"), dtype=torch.float64)
    for i in range(0, len(pool), chunk):
        b = torch.from_numpy(pool[i : i + chunk].reshape(len(pool[i : i + chunk]), -1)).double()
        best = torch.minimum(best, torch.cdist(a, b).min(1).values)
    return (best / np.sqrt(a.shape[1])).numpy()


# -- the evaluation -----------------------------------------------------------------------------
def split_items(samples: list[Sample]) -> tuple[list, list]:
    """Samples -> (pairs (image, caption), VQA triples (image, question, answer)); samples of
    other layouts (conversations, edits) are not scored."""
    pairs, vqa = [], []
    for s in samples:
        images = [g.pixels for g in s.segments if isinstance(g, Image)]
        texts = [g.text for g in s.segments if isinstance(g, Text)]
        if len(images) != 1:
            continue
        if len(s.segments) == 2 and len(texts) == 1:
            pairs.append((images[0], texts[0]))
        elif len(s.segments) == 3 and s.targets == (2,) and isinstance(s.segments[0], Image):
            vqa.append((images[0], texts[0], texts[1]))
    return pairs, vqa


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def evaluate_user_data(
    model,
    entry: str,
    n: int = 200,
    pool: int = 1000,
    seed: int = 0,
    sampling=None,
    copy_rms: float = COPY_RMS,
    out: str | Path | None = None,
) -> dict:
    """Score `model` (a UnifiedModel) on the first n samples of `entry` (a train.data source
    of held-out data) -> the metrics above; with `out`, also written to out/user_data.json."""
    from unimm.evaluate.ceiling import tokenizer_roundtrip
    from unimm.recipes.base import SamplingConfig, UnsupportedTask

    cfg = model.parts.config
    res = model.image_resolution
    bad = BadSamples()
    both = {"t2i": 1.0, "caption": 1.0}
    samples = list(islice(build_source({entry: 1.0}, seed, res, bad, both, cfg.data)(0), n))
    pairs, vqa = split_items(samples)
    results: dict = {"source": entry, "samples": len(samples), "captioned_images": len(pairs),
                     "vqa_questions": len(vqa), "bad": dict(bad)}  # fmt: skip
    real = np.stack([im for im, _ in pairs] + [im for im, _, _ in vqa])
    recon = tokenizer_roundtrip(model.parts.image, model.device)(real)
    results["reconstruction"] = {
        "psnr": _mean([psnr(a, b) for a, b in zip(real, recon)]),
        "ssim": _mean([ssim(a, b) for a, b in zip(real, recon)]),
    }
    greedy = SamplingConfig(temperature=0.0)
    jobs = {
        "caption": lambda: (model.caption([im for im, _ in pairs], greedy), [t for _, t in pairs]),
        "vqa": lambda: (
            model.answer([im for im, _, _ in vqa], [q for _, q, _ in vqa], greedy),
            [a for _, _, a in vqa],
        ),
    }
    for task, job in jobs.items():
        if not (pairs if task == "caption" else vqa):
            continue
        try:
            predictions, references = job()
        except UnsupportedTask as e:
            results[task] = {"unsupported": str(e)}
            continue
        results[task] = {
            "exact_match": _mean([exact_match(p, r) for p, r in zip(predictions, references)]),
            "f1": _mean([token_f1(p, r) for p, r in zip(predictions, references)]),
            "examples": [{"prediction": p, "reference": r}
                         for p, r in islice(zip(predictions, references), 5)],
        }  # fmt: skip
    if pairs:
        results["generation"] = _generation(model, pairs, pool, seed, sampling, copy_rms)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "user_data.json").write_text(json.dumps(results, indent=2))
    return results


def _generation(model, pairs, pool: int, seed: int, sampling, copy_rms: float) -> dict:
    from unimm.data.streams import images as image_stream
    from unimm.evaluate.retrieval import retrieval_check
    from unimm.recipes.base import UnsupportedTask

    cfg = model.parts.config
    try:
        generated = model.generate_images([t for _, t in pairs], 1, seed, sampling)
    except UnsupportedTask as e:
        return {"unsupported": str(e)}
    generated = np.stack([g[0] for g in generated])
    real = np.stack([im for im, _ in pairs])
    t = cfg.train
    train_source = build_source(t.data, t.seed, model.image_resolution, BadSamples(), t.tasks,
                                cfg.data)  # fmt: skip
    train_images = np.stack(list(islice(image_stream(train_source), pool)))
    gen_nn, real_nn = nearest_rms(generated, train_images), nearest_rms(real, train_images)
    captions = [t for _, t in pairs]
    retrieval = (
        retrieval_check(model, generated, real, captions) if len(set(captions)) > 1 else None
    )
    return {
        "retrieval": retrieval,
        "psnr_to_real": _mean([psnr(a, b) for a, b in zip(generated, real)]),
        "ssim_to_real": _mean([ssim(a, b) for a, b in zip(generated, real)]),
        "nearest_train_rms": float(np.median(gen_nn)),
        "real_nearest_train_rms": float(np.median(real_nn)),
        # < 1: generations sit closer to training images than real unseen images do
        "nearest_ratio": float(np.median(gen_nn) / max(np.median(real_nn), 1e-9)),
        "near_copies": float(np.mean(gen_nn < copy_rms)),
        "copy_rms": copy_rms,
        "pool": len(train_images),
    }


def format_results(r: dict) -> str:
    def num(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"{r['source']}: {r['samples']} samples ({r['captioned_images']} captioned "
             f"images, {r['vqa_questions']} VQA questions)"]  # fmt: skip
    rec = r["reconstruction"]
    lines.append(f"image tokenizer reconstruction: PSNR {num(rec['psnr'])} dB, SSIM "
                 f"{num(rec['ssim'])}")  # fmt: skip
    for task in ("caption", "vqa"):
        if task in r:
            m = r[task]
            scores = f"exact match {num(m.get('exact_match'))}, token F1 {num(m.get('f1'))}"
            lines.append(f"{task}: " + m.get("unsupported", scores))
    if "generation" in r:
        g = r["generation"]
        if "unsupported" in g:
            lines.append(f"generation: {g['unsupported']}")
        else:
            lines.append(
                f"generation: PSNR to the real image {num(g['psnr_to_real'])} dB, SSIM "
                f"{num(g['ssim_to_real'])}; nearest training image (of {g['pool']}) RMS "
                f"{g['nearest_train_rms']:.1f} vs {g['real_nearest_train_rms']:.1f} for real "
                f"held-out images (ratio {g['nearest_ratio']:.2f}); near copies "
                f"{100 * g['near_copies']:.0f} %"
            )
            if g.get("retrieval"):
                rt = g["retrieval"]
                lines.append(
                    f"generation vs own caption's image: AUC {rt['own_caption_auc']:.3f} (chance "
                    f"0.5), top-1 {rt['top1']:.3f} of {rt['pairs']} (chance "
                    f"{rt['chance_top1']:.3f}), in {rt['feature_space']}"
                )
    return "\n".join(lines)
