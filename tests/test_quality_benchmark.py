"""The quality benchmark (``benchmarks/quality.py``, issue 15) end to end, ``--quick`` on one data set.

Checks that the run writes its table and figure and that every cell of the table is filled: a number
``mean ± std`` (two seeds), except the deterministic network's mutual-information AUROC, documented as ``—`` (its
mutual information is 0 for every input). About half a minute alone on a 2-core CPU.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("bayesian_torch")
pytest.importorskip("matplotlib")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_quick_run_fills_every_column(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("quality", None)
    import quality

    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nkept prose\n\n## An older section\n\nkept too\n")
    assert quality.main(["--quick", "--datasets", "breast_cancer", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "kept prose" in text and "## An older section\n\nkept too" in text
    assert text.count(quality.BEGIN) == 1 and text.count(quality.END) == 1
    assert (tmp_path / "figures" / "quality_breast_cancer.png").stat().st_size > 1000

    section = text.split(quality.BEGIN)[1].split(quality.END)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    header = next(line for line in section.splitlines() if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[1:] == [label for _, label in quality.CLS_COLUMNS]
    assert len(rows) == len(quality.methods(quick=True))
    number = r"-?\d+(\.\d+)?(e[-+]?\d+)?"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(columns), row
        for col, cell in zip(columns[1:], cells[1:]):
            if cell == "—":
                assert (cells[0], col) == ("deterministic", "OOD AUROC MI"), f"undocumented empty cell: {row}"
                continue
            m = re.fullmatch(f"({number}) ± ({number})", cell)
            assert m, f"{cells[0]}, {col}: {cell!r} is not 'mean ± std'"
            assert math.isfinite(float(m.group(1))) and math.isfinite(float(m.group(4))), (cells[0], col, cell)


def test_write_section_replaces_only_its_own_section(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("quality", None)
    import quality

    path = tmp_path / "RESULTS.md"
    path.write_text("# Benchmark results\n\nprose\n\n## Older section\n\nold numbers\n")
    quality.write_section(path, ["first"])
    quality.write_section(path, ["second"])
    text = path.read_text()
    assert text.count(quality.BEGIN) == 1 and "first" not in text and "second" in text
    assert text.index("prose") < text.index(quality.BEGIN) < text.index("## Older section")
    assert text.endswith("## Older section\n\nold numbers\n")


@pytest.mark.slow
def test_cnn_rows_rotation_ladder_and_targets(tmp_path, monkeypatch):
    """The digits_cnn pieces end to end on a smoke configuration (1 epoch, 2 seeds, 2 test samples, three
    angles, the rows the targets need plus the new peers): every row gets every column and angle, the ladder's
    tables and figure are written and the targets are stated. ~20 s alone on a 2-core CPU."""
    pytest.importorskip("ivon")
    pytest.importorskip("laplace")
    monkeypatch.syspath_prepend(str(BENCH))
    for name in ("quality", "quality_methods", "quality_shift"):
        sys.modules.pop(name, None)
    import quality
    import quality_methods as qm
    import quality_shift
    import torch

    x = torch.randn(3, 1, 8, 8)
    assert torch.allclose(quality_shift.rotate(x, 0, 0.2, 0.3), x, atol=1e-5)
    r90 = quality_shift.rotate(x, 90, 0.2, 0.3)  # a quarter turn maps the 8x8 grid onto itself
    assert any(torch.allclose(r90, torch.rot90(x, k, dims=(-2, -1)), atol=1e-4) for k in (1, -1))

    monkeypatch.setattr(qm, "N_TEST_SAMPLES", 2)
    monkeypatch.setattr(qm, "ENSEMBLE", 2)
    monkeypatch.setattr(quality_shift, "ANGLES", (0, 90, 180))
    every = quality.cnn_methods(quick=True)
    keep = ["deterministic", f"deep ensemble ({qm.ENSEMBLE})", "IVON (ivon-opt)",
            "last-layer Laplace (laplace-torch, marglik)", quality.DEFAULT_NAME, quality.RANK1_NAME]
    monkeypatch.setattr(quality, "cnn_methods", lambda quick: {k: every[k] for k in keep})
    rows = quality.run_dataset("digits_cnn", 2, True, lambda msg: None, epochs=1)
    stats = quality.summarise(rows)
    assert list(stats) == keep
    for method, row in stats.items():
        for key in ["nll", "ece", "auroc_h", "train_s"] + [f"rot{a}:{m}" for a in (0, 90, 180) for m in
                                                         ("acc", "nll", "ece")]:
            assert math.isfinite(row[key][0]) and math.isfinite(row[key][1]), (method, key)
    lines = quality_shift.table(stats, "nll")
    assert len(lines) == 2 + len(keep) and "180°" in lines[0]
    quality_shift.figure(stats, tmp_path / "rot.png", "smoke")
    assert (tmp_path / "rot.png").stat().st_size > 1000
    targets = quality.cnn_targets(stats)
    assert sum(t.startswith(("* MET", "* MISS")) for t in targets) == 4
    assert any(quality.RANK1_NAME in t for t in targets)

    # seeds run in separate processes are pooled by --merge into the CNN's own section, other sections kept
    for seed in (0, 1):
        one = {m: [r[seed]] for m, r in rows.items()}
        (tmp_path / f"rows{seed}.json").write_text(json.dumps({"digits_cnn": one}))
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nprose\n\n## Older section\n\nkept\n")
    merge = ["--merge", str(tmp_path / "rows0.json"), str(tmp_path / "rows1.json"), "--out", str(tmp_path)]
    assert quality.main(merge + ["--epochs", "1", "--test-samples", "2"]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count(quality.CNN_BEGIN) == 1 and quality.BEGIN not in text and "## Older section\n\nkept" in text
    section = text.split(quality.CNN_BEGIN)[1].split(quality.CNN_END)[0]
    assert "rows0.json, rows1.json" in section and "180°" in section and ("MET" in section or "MISS" in section)
    assert (tmp_path / "figures" / "quality_rotation.png").stat().st_size > 1000
