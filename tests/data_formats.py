"""Write image-caption pairs (and VQA triples) in every format the readers take, as users'
tools write them: Hugging Face imagefolder (JSONL and CSV metadata), LLaVA JSON / JSONL,
WebDataset shards, unimm's export folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image as PILImage

from tests.image_files import png


def ext(image: np.ndarray | bytes) -> str:
    """An image is pixels (written as PNG) or a file's bytes (written as they are)."""
    return "jpg" if isinstance(image, bytes) and image[:2] == b"\xff\xd8" else "png"


def save(image: np.ndarray | bytes, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(image, bytes):
        path.write_bytes(image)
    else:
        PILImage.fromarray(image).save(path)
    return path.name


def encoded(image: np.ndarray | bytes) -> bytes:
    return image if isinstance(image, bytes) else png(image)


def write_imagefolder(folder: Path, pairs, metadata: str = "jsonl", column: str = "text") -> Path:
    """pairs: (image, caption); images under FOLDER/images/."""
    folder.mkdir(parents=True)
    rows = []
    for k, (image, text) in enumerate(pairs):
        name = f"images/{k:04d}.{ext(image)}"
        save(image, folder / name)
        rows.append({"file_name": name, column: text, "id": k})
    if metadata == "jsonl":
        (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with (folder / "metadata.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return folder


def write_llava(path: Path, records, images, jsonl: bool = False) -> Path:
    """records: LLaVA dicts whose "image" names a key of `images` (name -> pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for name, pixels in images.items():
        save(pixels, path.parent / name)
    if jsonl:
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    return path


def caption_records(pairs, prompt: str = "<image>") -> tuple[list[dict], dict]:
    records, images = [], {}
    for k, (image, text) in enumerate(pairs):
        name = f"img/{k:04d}.{ext(image)}"
        images[name] = image
        conv = [{"from": "human", "value": prompt}, {"from": "gpt", "value": text}]
        records.append({"id": str(k), "image": name, "conversations": conv})
    return records, images


def write_wds(path: Path, pairs, caption_in: str = "txt") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(path)) as w:
        for k, (image, text) in enumerate(pairs):
            caption = text if caption_in == "txt" else json.dumps({"caption": text})
            w.write({"__key__": f"{k:06d}", ext(image): encoded(image), caption_in: caption})
    return path


def write_export(folder: Path, pairs) -> Path:
    """unimm's own format (what `unimm world --out` writes), as text-to-image samples."""
    folder.mkdir(parents=True)
    with (folder / "samples.jsonl").open("w") as f:
        for k, (image, text) in enumerate(pairs):
            name = save(image, folder / "images" / f"{k:08d}_1.{ext(image)}")
            segments = [{"text": text}, {"image": f"images/{name}"}]
            f.write(json.dumps({"task": "t2i", "segments": segments, "targets": [1]}) + "\n")
    return folder


def write_every_format(root: Path, pairs) -> dict[str, str]:
    """train.data entry -> what it holds, for each format (every one holds `pairs`)."""
    records, images = caption_records(pairs)
    return {
        f"imagefolder={write_imagefolder(root / 'hf_jsonl', pairs)}": "imagefolder jsonl",
        f"folder={write_imagefolder(root / 'hf_csv', pairs, 'csv', 'caption')}": "imagefolder csv",
        f"llava={write_llava(root / 'llava' / 'data.json', records, images)}": "llava json",
        f"folder={write_llava(root / 'llava_l' / 'c.jsonl', records, images, True)}": "jsonl",
        f"wds={write_wds(root / 'shards' / 'shard-000.tar', pairs)}": "wds txt",
        f"folder={write_wds(root / 'shards_json' / 's.tar', pairs, 'json').parent}": "wds json",
        f"unimm={write_export(root / 'export', pairs)}": "unimm export",
    }
