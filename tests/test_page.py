"""The leaderboard page (harness/report/page.py) in a real headless Chromium: a page written by `scm-bench report`
for a tiny synthetic run of the digits recipe (two seeds, one diverged), a --compare run of a user's method (every
run of it diverged) and a --compare baseline set, opened from file:// with ?selftest. The page's own script then
sorts each table by its metric both ways, tries every option of the family and NFE filters and lists every image;
--dump-dom returns what it saw (JSON in <pre id="selftest">) with the page's DOM. Checked here: the tables hold
exactly the rows of page.csv (and page.csv the rows of table.csv and of the set), the sorts order them, the filters
keep exactly the rows of that family or NFE, every image loads, and the console shows nothing. No Python browser
library: Chromium's own command line is enough.

Skipped when no Chromium is installed, unless SCM_BENCH_REQUIRE_BROWSER=1 (CI sets it; then it fails)."""
import json
import math
import os
import re
import shutil
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from harness.report.report import write_report
from harness.report.rows import OURS
from test_report import ROOT, our_fid, seeds, write_runs

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--enable-logging=stderr",
         "--v=0"]
SET_NAME = "digits-published"  # a --compare baseline set on the digits
ROW_KEY = ["dataset", "metric", "set", "method_label", "stage", "size", "nfe", "guidance", "value"]


def browser_or_skip() -> str:
    found = next((path for path in map(shutil.which, BROWSERS) if path), None)
    if found is None:
        reason = ("no Chromium found (looked for " + ", ".join(BROWSERS) + "); install it: apt-get install chromium")
        if os.environ.get("SCM_BENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (SCM_BENCH_REQUIRE_BROWSER=1: the browser test must run)")
        pytest.skip(reason)
    return found


def open_page(browser: str, page: Path, profile: Path) -> tuple[str, list[str]]:
    """The page's DOM after its self-test, and the console lines Chromium logged for it."""
    done = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom",
                           page.resolve().as_uri() + "?selftest"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


class PageDom(HTMLParser):
    """The rows of each table (section data-dataset / data-metric; each cell's data-col -> data-value), the rows'
    titles, and the self-test's JSON."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.titles, self.section, self.row, self.selftest, self._in_selftest = [], [], {}, None, "", False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "data-metric" in attrs:
            self.section = {"dataset": attrs["data-dataset"], "metric": attrs["data-metric"]}
        elif tag == "tr" and "data-family" in attrs:
            self.row = {**self.section, "_family": attrs["data-family"], "_nfe": attrs["data-nfe"]}
            self.rows.append(self.row)
            self.titles.append(attrs.get("title", ""))
        elif tag == "td" and self.row is not None and "data-col" in attrs:
            self.row[attrs["data-col"]] = attrs["data-value"]
        elif tag == "pre" and attrs.get("id") == "selftest":
            self._in_selftest = True

    def handle_endtag(self, tag):
        self.row = None if tag == "tr" else self.row
        self._in_selftest = False if tag == "pre" else self._in_selftest

    def handle_data(self, data):
        if self._in_selftest:
            self.selftest += data


def _grid_png(path: Path) -> Path:
    Image.new("L", (24, 24), 128).save(path)
    return path


def _users_recipe(folder: Path) -> Path:
    """A user's copy of the digits recipe: its student is the user's method (tests/report_fixtures.py), no sCT."""
    raw = yaml.safe_load((ROOT / "recipes" / "digits.yaml").read_text())
    raw["name"] = "fastcm"
    del raw["stages"]["sct"]
    raw["stages"]["scd"]["method"] = "report_fixtures:FastCM"
    path = folder / "fastcm.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _baseline_set(folder: Path) -> None:
    rows = [("GAN-x", "joint", 1, "fid", 9.5), ("EDM-x", "diffusion", 35, "fid", 5.5), ("CT-x", "training", 2, "fid",
                                                                                         7.5),
            ("CT-x", "training", 2, "kid", 0.004), ("other data", "training", 1, "fid", 1.0)]
    frame = pd.DataFrame([{"table": "t1", "dataset": "cifar10" if method == "other data" else "digits",
                           "method": method, "family": family, "size": "", "params_m": 1.0, "nfe": nfe,
                           "guidance": None, "metric": metric, "value": value, "source": f"{method} paper, Table 1"}
                          for method, family, nfe, metric, value in rows])
    folder.mkdir(parents=True)
    frame.to_csv(folder / f"{SET_NAME}.csv", index=False)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """results/digits/ of a synthetic run (ours: teacher, sCT, sCD at seeds 0, 1; sCD seed 1 diverged) with
    --compare fastcm (its student diverged at every seed) and --compare digits-published (a baseline set)."""
    tmp = tmp_path_factory.mktemp("page")
    grid = _grid_png(tmp / "grid.png")
    machine = {"machine": "Test CPU 9000", "threads": 2, "torch": "2.14.1", "train_machine": "NVIDIA H200",
               "train_threads": 2, "train_torch": "2.14.1"}

    def ours(job, rows):
        for row in rows:
            row.update(grid=str(grid), **machine)
            if row["method"] == "scd" and row["seed"] == 1:
                row.update(diverged=True, value=float("nan"))
        rows += [{**row, "metric": "class_accuracy", "value": 0.9 + row["nfe"] / 1000} for row in rows
                 if row["metric"] == "fid" and not row["diverged"]]

    def users(job, rows):  # the teacher's job is ours (shared); the student's rows: an older run's, diverged
        if job.train.method_class.name != "fastcm":
            return ours(job, rows)
        for row in rows:
            row.update(diverged=True, value=float("nan"))

    runs = tmp / "runs"
    manifest = write_runs(ROOT / "recipes" / "digits.yaml", runs, seeds([0, 1]), edit=ours)
    write_runs(_users_recipe(tmp), runs, seeds([0, 1]), fid_of=our_fid, edit=users)
    _baseline_set(tmp / "baselines")
    table = write_report(manifest, runs, tmp / "results", compare=["fastcm", SET_NAME],
                         baselines_dir=tmp / "baselines")
    return tmp / "results" / "digits", table


@pytest.fixture(scope="module")
def opened(page, tmp_path_factory):
    browser = browser_or_skip()
    folder, _ = page
    dom, console = open_page(browser, folder / "index.html", tmp_path_factory.mktemp("profile"))
    parsed = PageDom(dom)
    assert parsed.selftest, "the page's self-test wrote nothing: its script did not run (see the console lines)"
    return parsed, json.loads(parsed.selftest), console


def _csv(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "page.csv", dtype=str, keep_default_na=False)


def _keys(records, columns) -> Counter:
    """Rows as comparable tuples: numbers as numbers (the DOM's sort values and page.csv write them alike)."""
    def normal(column, value):
        return (float(value) if value != "" else None) if column in ("nfe", "guidance", "value") else value
    return Counter(tuple(normal(c, record.get(c, "")) for c in columns) for record in records)


def _boards(records) -> dict:
    boards = {}
    for record in records:
        boards.setdefault((record["dataset"], record["metric"]), []).append(record)
    return boards


def test_page_csv_holds_the_tables_rows_and_the_sets(page):
    folder, table = page
    rows = _csv(folder)
    runs = rows[rows.reference == ""]
    fid = runs[runs.metric == "fid"]
    expected = table[table.source.isin([OURS, "fastcm"])]  # the set's rows come from the set, once
    assert sorted(zip(fid.set, fid.stage, fid.nfe.astype(int))) == sorted(
        zip(expected.source, expected.stage, expected.nfe))
    assert set(rows.metric) == {"fid", "kid", "class_accuracy"} and set(rows.dataset) == {"digits"}
    published = rows[rows.set == SET_NAME]
    assert sorted(published.method_label) == ["CT-x", "CT-x", "EDM-x", "GAN-x"]  # not the other data set's row
    assert {"joint", "diffusion", "training", "distillation", "other"} <= set(rows.family)
    ours_fid = fid[fid.set == OURS]
    assert set(ours_fid.code_version) == {"deadbee"} and set(ours_fid.train_machine) == {"NVIDIA H200"}
    assert set(ours_fid.recipe_file) == {"recipes/digits.yaml"} and ours_fid.recipe_hash.str.len().eq(12).all()
    assert set(ours_fid.seeds) == {"0, 1"} and ours_fid.gpu_hours.astype(float).gt(0).all()
    users = fid[(fid.set == "fastcm") & (fid.method == "fastcm")]
    assert len(users) == 2 and (users.machine == "").all() and (users.value == "").all()  # diverged; no machine
    index = (folder.parent / "index.html").read_text()
    assert 'href="digits/index.html"' in index and "4.500 (sCD)" in index  # best 1-step FID: sCD (seed 0 only)


def test_the_tables_hold_exactly_the_csv_rows(page, opened):
    folder, _ = page
    dom, _, _ = opened
    shown, expected = _boards(dom.rows), _boards(_csv(folder).to_dict("records"))
    assert set(shown) == set(expected)
    for board, rows in expected.items():
        columns = [c for c in ROW_KEY if c in shown[board][0]]
        assert _keys(shown[board], columns) == _keys(rows, columns), board
        hidden = [c for c in ROW_KEY if c not in columns]  # a column a table leaves out says nothing: one value
        assert all(len({row[c] for row in rows}) == 1 for c in hidden), (board, hidden)
    ours = [title for row, title in zip(dom.rows, dom.titles) if row["set"] == OURS]
    assert ours and all("code version: deadbee" in t and "trained on: NVIDIA H200" in t for t in ours)
    compared = [title for row, title in zip(dom.rows, dom.titles) if row["method_label"] == "fastcm"]
    assert compared and all("machine: not recorded" in t for t in compared)


def test_sorting_by_the_metric_orders_every_table(page, opened):
    folder, _ = page
    rows = _csv(folder)
    _, selftest, _ = opened
    assert len(selftest["sorting"]) == rows.groupby(["dataset", "metric"]).ngroups == 3
    for board in selftest["sorting"]:
        values = rows[(rows.dataset == board["dataset"]) & (rows.metric == board["metric"])].value
        numbers = sorted(float(v) for v in values if v != "")
        blanks = [""] * int((values == "").sum())
        assert [float(v) if v else "" for v in board["ascending"]] == [*numbers, *blanks], board["metric"]
        assert [float(v) if v else "" for v in board["descending"]] == [*numbers[::-1], *blanks], board["metric"]
        assert board["ascending_marked"] and board["descending_marked"]
    fid = next(board for board in selftest["sorting"] if board["metric"] == "fid")
    assert "" in fid["ascending"]  # the diverged user's method: no number, last both ways


@pytest.mark.parametrize("name, column", [("family", "family"), ("nfe", "nfe")])
def test_filters_keep_exactly_that_family_or_nfe(page, opened, name, column):
    folder, _ = page
    rows = _csv(folder)
    _, selftest, _ = opened
    seen = selftest[name]
    assert set(seen) == {"", *rows[column]}
    assert seen[""]["shown"] == len(rows)
    for option, shown in seen.items():
        if option:
            assert shown["shown"] == (rows[column] == option).sum() > 0, option
            assert set(shown["families" if name == "family" else "nfes"]) == {option}


def test_every_image_loads_and_the_console_is_quiet(page, opened):
    folder, _ = page
    _, selftest, console = opened
    images = selftest["images"]
    sources = {image["src"] for image in images}
    assert {"fid_vs_nfe.png", "samples/ours-sct-nfe-1.png"} <= sources
    assert all(image["complete"] and image["naturalWidth"] > 0 for image in images), images
    assert all((folder / source).is_file() for source in sources)
    assert selftest["errors"] == [] and console == []


def test_the_checks_see_a_missing_image_and_a_script_error(page, tmp_path):
    """The checks above can fail: a copy of the page with one image gone and a script error is caught by both."""
    browser = browser_or_skip()
    folder, _ = page
    broken = tmp_path / "digits"
    shutil.copytree(folder, broken)
    for asset in ("page.js", "page.css"):  # what the page links beside it (../page.js)
        shutil.copy(folder.parent / asset, tmp_path / asset)
    (broken / "samples" / "ours-sct-nfe-1.png").unlink()
    page_file = broken / "index.html"
    page_file.write_text(page_file.read_text().replace("</body>", "<script>notDefinedAnywhere();</script></body>"))
    dom, console = open_page(browser, page_file, tmp_path / "profile")
    selftest = json.loads(PageDom(dom).selftest)
    missing = [image for image in selftest["images"] if image["src"] == "samples/ours-sct-nfe-1.png"]
    assert missing and all(image["naturalWidth"] == 0 for image in missing)
    assert any("notDefinedAnywhere" in error for error in selftest["errors"])
    assert any("Uncaught" in line for line in console)


def test_pages_rebuilt_from_a_committed_table(tmp_path):
    """A results folder whose runs are gone (results/digits as committed): the page from table.csv and table.md."""
    from harness.report.page_source import rebuild_pages

    shutil.copytree(ROOT / "results" / "digits", tmp_path / "digits",
                    ignore=shutil.ignore_patterns("index.html", "page.csv", "page.png"))
    rebuild_pages(tmp_path)
    rows = _csv(tmp_path / "digits")
    table = pd.read_csv(tmp_path / "digits" / "table.csv")
    fid = rows[rows.metric == "fid"]
    assert len(fid) == len(table) and [float(v) for v in fid.value] == pytest.approx(list(table.fid))
    committed = re.search(r"; code (\w+);", (ROOT / "results" / "digits" / "table.md").read_text()).group(1)
    assert set(fid.code_version) == {committed} and set(fid.recipe_file) == {"recipes/digits.yaml"}
    assert all(math.isnan(float(v or "nan")) for v in fid.gpu_hours)
    assert 'href="digits/index.html"' in (tmp_path / "index.html").read_text()
