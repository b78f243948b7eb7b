"""A new user's trial on public captioned data unimm was not developed on (issue 19).

The data: Animal-MNIST (PyPI `animal-mnist` 0.4, MIT licence), 10 000 greyscale 28 x 28
silhouettes of ten animals, 1 000 each, white on black. The trial does what a user with such a
data set would: writes it as a Hugging Face imagefolder (PNGs at their own 28 x 28 size,
`metadata.jsonl` with `file_name` and a caption "a drawing of a bear"), trains with the README's
command (every part, the image tokenizer included, trains on it; `data.resize` brings the
images to the run's resolution), then generates images from the captions and judges them:

- colours: the data is grey, so generated pixels should be grey too (share of pixels whose
  channels differ by at most GREY_TOLERANCE), with the data's brightness (mean luma, and the
  shares of dark background and bright silhouette pixels, against the held-out real images
  read through the run's own data policy);
- content: an independent classifier (PCA to 50 dimensions, then an RBF SVM; scikit-learn,
  nothing of unimm's) fitted on the exported training images. Its accuracy on the held-out
  real images is its ceiling; the same images brought to the run's resolution and back, and
  through the run's image tokenizer, say what the resolution change and the tokenizer cost
  before any generation. Every image reaches the classifier as 28 x 28 grey: luma (ITU-R 601,
  PIL's "L"), then PIL's bicubic resize (antialiased when it shrinks), so a generated 64 x 64
  image goes the way back of the 28 -> 64 upscale the training images took;
- memorisation and variety: each generation's RMS distance (classifier space, 0-255) to the
  nearest training image, against that of real held-out images (Carlini et al. 2023, as in
  `unimm eval-data`), and the mean pairwise distance within a class, generated against real.

The issue's bar: colours kept and >= 80 % of the generations recognised as their caption.

    .venv/bin/python -m pip install --no-deps animal-mnist==0.4    # make setup does this
    # export the data (OUT/data/train, OUT/data/heldout) and print the training command:
    PYTHONPATH=src .venv/bin/python benchmarks/new_user_trial.py --out runs/animals
    # export, train (preset small: 180 s image tokenizer + 420 s model), generate and score:
    PYTHONPATH=src .venv/bin/python benchmarks/new_user_trial.py --out runs/animals --run
    # score a run trained already (by the printed command, or with other options):
    PYTHONPATH=src .venv/bin/python benchmarks/new_user_trial.py --out runs/animals \\
        --score runs/animals/run

Writes OUT/trial.json, OUT/trial.md and OUT/grid.png (a real held-out image, then the
generations, one row per class). `unimm eval-data OUT/run folder=OUT/data/heldout` scores the
same run with unimm's own user-data metrics.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import pickle
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# Label order of the package's data (its README lists the names alphabetically; checked
# against the images: label 0 is bears, 9 the striped zebras).
CLASSES = ("bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep", "zebra")
CAPTION = "a drawing of a {}"
SIDE = 28  # the data's size, and the classifier's input
GREY_TOLERANCE = 12  # a pixel is grey when no two of its channels differ by more (0-255)
DARK, BRIGHT = 64, 192  # luma under DARK: background; over BRIGHT: silhouette
# The verdict's thresholds: the 80 %; colours within these of the data's.
MIN_ACCURACY = 0.8
MIN_GREY_SHARE = 0.95
MAX_BRIGHTNESS_GAP = 20.0  # mean luma, 0-255


# -- the data -----------------------------------------------------------------------------------
def animal_mnist_dir() -> Path:
    """The installed package's data folder, found without importing the package."""
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "animal-mnist is not installed: .venv/bin/python -m pip install --no-deps "
            "animal-mnist==0.4 (its tensorflow requirement is for MNIST downloads not used here)"
        )
    return Path(spec.submodule_search_locations[0]) / "data" / "Animal_MNIST"


def load_animal_mnist() -> tuple[np.ndarray, np.ndarray]:
    """-> ((10000, 28, 28) uint8 images, (10000,) int labels 0-9, in CLASSES order)."""
    folder = animal_mnist_dir()
    # The package's own loader imports tensorflow (for MNIST downloads), so its two files are
    # read here directly. They are pickles, and unpickling runs whatever code the file names:
    # acceptable only because they come from a pinned registry package whose own code runs on
    # import anyway. Never load a user's file this way (unimm's readers read no pickle).
    with gzip.open(folder / "animal_data_version_3.gz", "rb") as f:
        images = np.asarray(pickle.load(f))
    with gzip.open(folder / "animal_label_version_3.gz", "rb") as f:
        labels = np.asarray(pickle.load(f))
    if images.shape[1:] != (SIDE, SIDE) or images.dtype != np.uint8 or len(labels) != len(images):
        raise ValueError(f"unexpected animal-mnist files: {images.shape} {images.dtype}")
    return images, labels.astype(np.int64)


def split(
    labels: np.ndarray, train_per_class: int, heldout_per_class: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a training and a held-out split, disjoint, the same count of every class."""
    rng = np.random.default_rng(seed)
    train, heldout = [], []
    for c in range(len(CLASSES)):
        idx = rng.permutation(np.flatnonzero(labels == c))
        if len(idx) < train_per_class + heldout_per_class:
            raise ValueError(f"class {CLASSES[c]} has {len(idx)} images")
        train.append(idx[:train_per_class])
        heldout.append(idx[train_per_class : train_per_class + heldout_per_class])
    return np.concatenate(train), np.concatenate(heldout)


def export_imagefolder(
    images: np.ndarray, labels: np.ndarray, folder: Path, shuffle_seed: int | None = 0
) -> Path:
    """Write a Hugging Face imagefolder: FOLDER/NNNNN.png (grey, the images' own size) and
    metadata.jsonl rows {file_name, text, label}.

    Rows are shuffled (shuffle_seed) unless it is None, which keeps them grouped by class as
    the package ships them: unimm reads file sources in a fresh seeded order each epoch
    (data.shuffle), and a grouped export is the case that option exists for. Returns the
    folder."""
    from PIL import Image as PILImage

    folder.mkdir(parents=True, exist_ok=True)
    order = np.arange(len(images))
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(order)
    rows = []
    for k, i in enumerate(order):
        name = f"{k:05d}.png"
        PILImage.fromarray(images[i]).save(folder / name)
        label = CLASSES[labels[i]]
        rows.append({"file_name": name, "text": CAPTION.format(label), "label": label})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def read_back(folder: Path, resolution: int, data_cfg=None) -> tuple[np.ndarray, list[str]]:
    """The exported images as unimm reads them for a run: (N, R, R, 3) uint8 and captions."""
    from unimm.data.decode import decode_image

    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    pixels = [decode_image(folder / r["file_name"], resolution, data_cfg)[0] for r in rows]
    return np.stack(pixels), [r["text"] for r in rows]


def label_of(caption: str) -> int:
    return [CAPTION.format(c) for c in CLASSES].index(caption)


# -- the training command -----------------------------------------------------------------------
def train_args(
    run: Path, data: Path, preset: str, max_seconds: float | None, extra: list[str]
) -> list[str]:
    """`unimm train`'s arguments, as the README gives them for a user's imagefolder."""
    args = ["train", "--out", str(run), "--preset", preset, f"train.data=imagefolder={data}"]
    if max_seconds is not None:
        args.append(f"train.max_seconds={max_seconds:g}")
    return args + list(extra)


# -- the independent classifier -----------------------------------------------------------------
def to_classifier_input(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) grey or (N, H, W, 3) RGB uint8 -> (N, 784) floats in [0, 1]: luma (PIL's
    "L", ITU-R 601), then a bicubic resize to 28 x 28 (antialiased when shrinking)."""
    from PIL import Image as PILImage

    out = []
    for im in images:
        pil = PILImage.fromarray(im).convert("L")
        if pil.size != (SIDE, SIDE):
            pil = pil.resize((SIDE, SIDE), PILImage.Resampling.BICUBIC)
        out.append(np.asarray(pil, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(out)


def fit_classifier(x: np.ndarray, y: np.ndarray, seed: int = 0):
    """PCA (at most 50 dimensions) then an RBF SVM: 95 % on the held-out real images when fitted
    on 9 000, in seconds on one core."""
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import SVC

    pca = PCA(min(50, len(x) - 1, x.shape[1]), random_state=seed)
    return make_pipeline(pca, SVC(C=10.0, gamma="scale")).fit(x, y)


def accuracy(classifier, x: np.ndarray, y: np.ndarray) -> dict:
    predicted = classifier.predict(x)
    per_class = {CLASSES[c]: float(np.mean(predicted[y == c] == c)) for c in np.unique(y)}
    confusion = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    return {"accuracy": float(np.mean(predicted == y)), "per_class": per_class,
            "confusion": confusion.tolist()}  # fmt: skip


# -- colours, memorisation, variety -------------------------------------------------------------
def luma(images: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 -> ITU-R 601 luma in 0-255 (what PIL's "L" computes)."""
    return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def colour_stats(images: np.ndarray) -> dict:
    """(N, H, W, 3) uint8 -> share of grey pixels, mean luma, shares of dark and bright."""
    x = images.astype(np.int16)
    spread = np.abs(x - np.roll(x, 1, axis=-1)).max(-1)  # |R-G|, |G-B|, |B-R|, largest
    y = luma(images)
    return {"grey_share": float(np.mean(spread <= GREY_TOLERANCE)),
            "mean_luma": float(y.mean()), "dark_share": float(np.mean(y < DARK)),
            "bright_share": float(np.mean(y > BRIGHT))}  # fmt: skip


def within_class_spread(x: np.ndarray, y: np.ndarray) -> float:
    """Mean pairwise RMS distance (0-255) between images of one class, averaged over classes:
    near 0 when a class is drawn as one picture."""
    spreads = []
    for c in np.unique(y):
        v = x[y == c].astype(np.float64) * 255.0
        if len(v) < 2:
            continue
        d = np.sqrt(((v[:, None] - v[None]) ** 2).mean(-1))
        spreads.append(d[np.triu_indices(len(v), 1)].mean())
    return float(np.mean(spreads))


def nearest_train(x: np.ndarray, train_x: np.ndarray) -> np.ndarray:
    """(N, 784) and (M, 784) classifier inputs -> (N,) RMS distance (0-255) to the nearest."""
    from unimm.evaluate.user_data import nearest_rms

    return nearest_rms(x * 255.0, train_x * 255.0)


# -- scoring ------------------------------------------------------------------------------------
def score(
    classifier,
    train_x: np.ndarray,
    heldout: dict[str, tuple[np.ndarray, np.ndarray]],
    generated: np.ndarray,
    generated_y: np.ndarray,
    real_at_resolution: np.ndarray,
) -> dict:
    """heldout: name -> (images, labels) of real held-out images read each way (28 x 28, at the
    run's resolution, through its image tokenizer); generated: (N, R, R, 3) uint8 with labels."""
    x_gen = to_classifier_input(generated)
    rows = {name: accuracy(classifier, to_classifier_input(im), y)
            for name, (im, y) in heldout.items()}  # fmt: skip
    rows["generated"] = accuracy(classifier, x_gen, generated_y)
    real_x, real_y = to_classifier_input(heldout["real"][0]), heldout["real"][1]
    gen_nn, real_nn = nearest_train(x_gen, train_x), nearest_train(real_x, train_x)
    gen_colour, real_colour = colour_stats(generated), colour_stats(real_at_resolution)
    recognised = rows["generated"]["accuracy"]
    colour_kept = (
        gen_colour["grey_share"] >= MIN_GREY_SHARE
        and abs(gen_colour["mean_luma"] - real_colour["mean_luma"]) <= MAX_BRIGHTNESS_GAP
    )
    return {
        "classifier": rows,
        "colour": {"generated": gen_colour, "real": real_colour},
        "nearest_train_rms": {
            "generated": float(np.median(gen_nn)),
            "real": float(np.median(real_nn)),
        },
        "within_class_rms": {
            "generated": within_class_spread(x_gen, generated_y),
            "real": within_class_spread(real_x, real_y),
        },
        "verdict": {
            "colour_kept": bool(colour_kept),
            "content_recognised": bool(recognised >= MIN_ACCURACY),
            "min_accuracy": MIN_ACCURACY,
            "min_grey_share": MIN_GREY_SHARE,
            "max_brightness_gap": MAX_BRIGHTNESS_GAP,
        },
    }


def generate(model, per_class: int, seed: int, sampling) -> tuple[np.ndarray, np.ndarray]:
    """per_class images from each class's caption -> ((N, R, R, 3) uint8, (N,) labels)."""
    captions = [CAPTION.format(c) for c in CLASSES]
    images = model.generate_images(captions, per_class, seed, sampling)
    labels = np.repeat(np.arange(len(CLASSES)), per_class)
    return np.stack([im for per in images for im in per]), labels


# -- the report ---------------------------------------------------------------------------------
READ_AS = {  # key: (what the row holds, its per-class column's name)
    "real": ("real held-out, 28 x 28 (the classifier's ceiling)", "real"),
    "real_at_resolution": (
        "real held-out, to the run's resolution by data.resize and back",
        "real, run's resolution",
    ),
    "tokenizer": ("real held-out through the run's image tokenizer", "tokenizer"),
    "generated": ("generated from the captions", "generated"),
}


def markdown(r: dict) -> str:
    c, v = r["classifier"], r["verdict"]
    lines = [f"# New user trial: {r['data']}", "",
             f"Run `{r['run']}` ({r['resolution']} px), {r['per_class']} generations per class "
             f"(seed {r['seed']}, cfg {r['sampling']['cfg_scale']}). Verdict: colours kept "
             f"**{v['colour_kept']}**, content recognised (>= {100 * v['min_accuracy']:.0f} %) "
             f"**{v['content_recognised']}**.", ""]  # fmt: skip
    if r.get("trained_on"):  # that every part, the image tokenizer too, trained on the data
        from unimm.train.provenance import line

        lines += [f"- {line(part, facts)}" for part, facts in r["trained_on"]["parts"].items()]
        lines.append("")
    lines += ["| images | classifier accuracy |", "|---|---|"]
    rows = [k for k in READ_AS if k in c]
    lines += [f"| {READ_AS[k][0]} | {100 * c[k]['accuracy']:.1f} % |" for k in rows]
    lines += ["", "| | grey pixels | mean luma | dark share | bright share | nearest training "
              "image RMS | within-class RMS |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for who in ("real", "generated"):
        col = r["colour"][who]
        lines.append(
            f"| {who} | {100 * col['grey_share']:.1f} % | {col['mean_luma']:.1f} | "
            f"{col['dark_share']:.2f} | {col['bright_share']:.2f} | "
            f"{r['nearest_train_rms'][who]:.1f} | {r['within_class_rms'][who]:.1f} |"
        )
    lines += ["", "| class | " + " | ".join(READ_AS[k][1] for k in rows) + " |",
              "|---" * (1 + len(rows)) + "|"]  # fmt: skip
    for name in CLASSES:
        cells = [f"{100 * c[k]['per_class'].get(name, float('nan')):.0f} %" for k in rows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def grid(real: np.ndarray, generated: np.ndarray, per_class: int, columns: int = 10):
    """One row per class: its first real held-out image at the run's resolution, a gap, then
    up to `columns` generations; the class name on the left."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    res, pad, label = generated.shape[1], 4, 64
    n = min(columns, per_class)
    canvas = PILImage.new("RGB", (label + (n + 1) * (res + pad) + pad, len(CLASSES) * (res + pad)),
                          (255, 255, 255))  # fmt: skip
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(CLASSES):
        y = c * (res + pad)
        draw.text((4, y + res // 2 - 5), name, fill=(0, 0, 0))
        canvas.paste(PILImage.fromarray(real[c]), (label, y))
        for j in range(n):
            x = label + (j + 1) * (res + pad) + pad
            canvas.paste(PILImage.fromarray(generated[c * per_class + j]), (x, y))
    return canvas


# -- the trial ----------------------------------------------------------------------------------
def export(out: Path, train_per_class: int, heldout_per_class: int, sorted_rows: bool) -> dict:
    """Split the data and write OUT/data/train and OUT/data/heldout, unless OUT/data already
    holds this export (rewriting the files under a run that reads them could tear one)."""
    images, labels = load_animal_mnist()
    train, heldout = split(labels, train_per_class, heldout_per_class)
    what = {"package": "animal-mnist 0.4", "train_per_class": train_per_class,
            "heldout_per_class": heldout_per_class, "sorted_rows": sorted_rows}  # fmt: skip
    stamp = out / "data" / "export.json"
    if not stamp.is_file() or json.loads(stamp.read_text()) != what:
        stamp.unlink(missing_ok=True)
        # held out shuffled too: `unimm eval-data` scores a source's first rows
        seed = None if sorted_rows else 0
        export_imagefolder(images[train], labels[train], out / "data" / "train", seed)
        export_imagefolder(images[heldout], labels[heldout], out / "data" / "heldout", seed)
        stamp.write_text(json.dumps(what))
    return {"images": images, "labels": labels, "train": train, "heldout": heldout}


def run_trial(args: argparse.Namespace, data: dict, run: Path) -> dict:
    from unimm.evaluate.ceiling import tokenizer_roundtrip
    from unimm.pipeline import load_checkpoint
    from unimm.recipes.base import SamplingConfig

    model, _ = load_checkpoint(run)
    model.eval()
    res, data_cfg = model.image_resolution, model.parts.config.data
    images, labels = data["images"], data["labels"]
    train_x = to_classifier_input(images[data["train"]])
    t0 = time.perf_counter()
    classifier = fit_classifier(train_x, labels[data["train"]])
    fit_s = time.perf_counter() - t0
    real, real_y = images[data["heldout"]], labels[data["heldout"]]
    # the same images as the run reads them (the export's row order, labels from the captions)
    at_res, captions = read_back(args.out / "data" / "heldout", res, data_cfg)
    at_y = np.array([label_of(t) for t in captions])
    recon = tokenizer_roundtrip(model.parts.image, model.device)(at_res)
    sampling = SamplingConfig(cfg_scale=args.cfg, temperature=args.temperature,
                              cfg_keep_background=not args.standard_cfg)  # fmt: skip
    t0 = time.perf_counter()
    generated, gen_y = generate(model, args.per_class, args.seed, sampling)
    gen_s = time.perf_counter() - t0
    heldout = {"real": (real, real_y), "real_at_resolution": (at_res, at_y),
               "tokenizer": (recon, at_y)}  # fmt: skip
    result = score(classifier, train_x, heldout, generated, gen_y, at_res)
    trained_on = run / "trained_on.json"
    result |= {
        "data": "Animal-MNIST (animal-mnist 0.4): 28 x 28 grey silhouettes, 10 classes",
        "run": str(run), "resolution": res, "per_class": args.per_class, "seed": args.seed,
        "sampling": {"cfg_scale": args.cfg, "temperature": args.temperature,
                     "cfg_keep_background": not args.standard_cfg},
        "train_images": len(data["train"]), "heldout_images": len(data["heldout"]),
        "trained_on": json.loads(trained_on.read_text()) if trained_on.is_file() else None,
        "seconds": {"classifier_fit": fit_s, "generation": gen_s},
    }  # fmt: skip
    first = [int(np.flatnonzero(at_y == c)[0]) for c in range(len(CLASSES))]
    grid(at_res[first], generated, args.per_class).save(args.out / "grid.png")
    (args.out / "trial.json").write_text(json.dumps(result, indent=2))
    (args.out / "trial.md").write_text(markdown(result))
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/animals"))
    ap.add_argument("--run", action="store_true", help="train OUT/run, then score it")
    ap.add_argument("--score", type=Path, metavar="RUN", help="score this trained run")
    ap.add_argument("--preset", default="small")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=420.0,
        help="train.max_seconds of the model (default: the small preset's 420)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another unimm train override (repeatable)",
    )
    ap.add_argument("--train-per-class", type=int, default=900)
    ap.add_argument("--heldout-per-class", type=int, default=100)
    ap.add_argument(
        "--sorted-rows",
        action="store_true",
        help="write metadata.jsonl grouped by class, as the package ships it",
    )
    ap.add_argument("--per-class", type=int, default=20, help="generations per class")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cfg", type=float, default=5.0, help="as `unimm generate --cfg`")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--standard-cfg", action="store_true", help="as `unimm generate`'s")
    args = ap.parse_args(argv)
    data = export(args.out, args.train_per_class, args.heldout_per_class, args.sorted_rows)
    run = args.score or args.out / "run"
    command = train_args(run, args.out / "data" / "train", args.preset, args.max_seconds, args.set)
    print(f"exported {len(data['train'])} training and {len(data['heldout'])} held-out images "
          f"to {args.out / 'data'}")  # fmt: skip
    if args.score is None:
        print(f"train with:\n  unimm {shlex.join(command)}")
    if args.run and args.score is None:
        subprocess.run([sys.executable, "-m", "unimm", *command], check=True)
    if args.run or args.score is not None:
        result = run_trial(args, data, run)
        print(markdown(result))
        print(f"written: {args.out / 'trial.json'}, trial.md, grid.png")


if __name__ == "__main__":
    main()
