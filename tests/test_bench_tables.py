"""The benchmark tables in README.md and docs/benchmarks.md are what ``bench/table.py`` renders
from the committed JSON in ``bench/results/``: no figure in the docs is typed by hand."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_committed_tables_are_the_committed_results(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "bench").mkdir()
    for doc in ("README.md", "docs/benchmarks.md"):
        shutil.copy(ROOT / doc, tmp_path / doc)
    for script in ROOT.joinpath("bench").glob("table*.py"):
        shutil.copy(script, tmp_path / "bench" / script.name)
    (tmp_path / "bench" / "results").symlink_to(ROOT / "bench" / "results")
    for doc in ("README.md", "docs/benchmarks.md"):  # a stale line in a block must be rewritten
        text = (tmp_path / doc).read_text()
        assert "<!-- BENCH:START -->\n" in text
        (tmp_path / doc).write_text(text.replace("<!-- BENCH:START -->\n", "<!-- BENCH:START -->\nstale\n"))
    p = subprocess.run([sys.executable, "bench/table.py"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for doc in ("README.md", "docs/benchmarks.md"):
        assert (tmp_path / doc).read_text() == (ROOT / doc).read_text(), f"{doc}: run python bench/table.py"
