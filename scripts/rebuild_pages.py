"""Rebuild the leaderboard pages of results whose runs are gone, from what each results/<recipe>/ folder holds
(table.csv, table.md, plots, sample grids); `scm-bench report` writes the same pages when the runs are there.

    python scripts/rebuild_pages.py [RESULTS_DIR]      (default: results)

Writes RESULTS_DIR/<recipe>/index.html and page.csv for every RESULTS_DIR/<recipe>/table.csv, and
RESULTS_DIR/index.html. Open the index in a browser: file:///path/to/results/index.html.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.report.page_source import PageSourceError, rebuild_pages  # noqa: E402


def main(results: str = "results") -> int:
    root = Path(results)
    if not root.is_dir():
        print(f"error: {root}: no such folder; give the results folder, e.g. python scripts/rebuild_pages.py results",
              file=sys.stderr)
        return 2
    try:
        pages = rebuild_pages(root)
    except (PageSourceError, OSError) as error:
        print(f"error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    for page in pages:
        print(page)
    print(root / "index.html")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
