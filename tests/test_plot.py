"""`unimm plot RUN` writes the loss and evaluation curves; a non-run is one clear error."""

from __future__ import annotations

import json

from PIL import Image

from unimm.cli import main


def test_plot_writes_pngs_and_rejects_a_non_run(tmp_path, capsys):
    rows = [{"step": s, "loss": 6.0 / s, "loss_text": 5.0 / s} for s in range(1, 6)]
    torn = '{"step": 6, "lo'  # the run was killed while writing its last line
    (tmp_path / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + torn)
    evals = [{"step": 2, "vqa": 0.1}, {"step": 4, "vqa": 0.3}]
    (tmp_path / "eval_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    assert main(["plot", str(tmp_path)]) == 0
    for name in ("loss_curve.png", "eval_curve.png"):
        with Image.open(tmp_path / name) as im:
            assert im.size[0] > 100
    assert main(["plot", str(tmp_path / "nope")]) == 2
    assert "no train_log.jsonl" in capsys.readouterr().err
    (tmp_path / "eval_log.jsonl").write_text('{"step": 2, "vqa": 0.1}\nnot json\n')
    assert main(["plot", str(tmp_path)]) == 2  # a broken line inside the log is still an error
    assert "line 2 is not JSON" in capsys.readouterr().err
