"""Stored baseline sets (results/baselines/NAME.csv): `scm-bench baselines list` and `show` on the committed sets;
`save` freezing a synthetic run's rows (tests/test_report.py's write_runs: no training) over seeds with their
provenance; `report --compare NAME` pairing a second run's rows with the saved set by data set, metric, NFE and
guidance, never by position; and each bad input ending with one line and exit code 2, nothing written."""
import io
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from harness.cli import app
from harness.recipe.load import load_recipe
from harness.recipe.manifest import write_manifest
from harness.recipe.planner import plan_jobs
from harness.report.baseline_sets import BaselineSet, read_set
from harness.report.paper import BASELINE_COLUMNS, BASELINES
from harness.report.report import write_report
from harness.report.set_pairing import paired_values, with_set_values
from test_report import ROOT, seeds, write_runs

DIGITS = ROOT / "recipes" / "digits.yaml"
METHOD_FID = {"diffusion": 6.0, "sct": 11.0, "scd": 10.0}  # apart, so a row paired with another method shows


def saved_fid(method, size, nfe, guidance, seed):
    """The saved run's numbers: per method, lower with more steps; seeds 0.1 apart (mean +0.1, std 0.1)."""
    return METHOD_FID[method] - nfe / 10 + 0.1 * seed


def later_fid(method, size, nfe, guidance, seed):
    return saved_fid(method, size, nfe, guidance, seed) - 1.0


def cli(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_error_line(result, *words) -> None:
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    for word in words:
        assert word in result.output, result.output


def later_recipe(tmp_path: Path) -> Path:
    """The digits recipe under another name: a later run of the same methods, on the same data set."""
    raw = yaml.safe_load(DIGITS.read_text())
    raw["name"] = "digits_later"
    path = tmp_path / "recipes" / "digits_later.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The digits run (3 seeds) saved as the set digits-v1 under a fresh baselines folder."""
    tmp = tmp_path_factory.mktemp("saved")
    write_runs(DIGITS, tmp / "runs", seeds(), fid_of=saved_fid)
    result = cli("baselines", "save", DIGITS, "--as", "digits-v1", "--runs-dir", tmp / "runs",
                 "--baselines-dir", tmp / "baselines")
    assert result.exit_code == 0, result.output
    return tmp, tmp / "baselines" / "digits-v1.csv"


def test_list_shows_the_committed_sets():
    result = cli("baselines", "list")
    assert result.exit_code == 0, result.output
    paper = next(line for line in result.output.splitlines() if "sCM_paper" in line)
    assert "264" in paper and "cifar10, imagenet512, imagenet64" in paper and "fd_dinov2, fid" in paper
    assert "sCM paper" in paper
    assert "MeanFlow paper" in next(line for line in result.output.splitlines() if "competitors" in line)


def test_list_and_show_do_not_import_torch():
    code = ("import sys; from typer.testing import CliRunner; from harness.cli import app; "
            "assert all(CliRunner().invoke(app, args).exit_code == 0 for args in "
            "(['baselines', 'list'], ['baselines', 'show', 'competitors'])); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_show_prints_a_committed_set_in_100_columns():
    result = cli("baselines", "show", "sCM_paper")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 100
    assert "table2 (imagenet512): sCM paper Table 2" in result.output and "fd_dinov2" in result.output
    assert "[1] sCM paper Table 1 (v2; v1 printed 2.97)" in result.output  # a row's own source, as a note
    sct = next(line for line in lines if line.split()[:2] == ["sCT", "1"])  # Table 1, CIFAR-10: method, NFE, FID
    assert "2.85" in sct


def test_save_freezes_the_runs_rows_over_seeds_with_provenance(saved):
    _, path = saved
    rows = pd.read_csv(path, dtype={"size": str})
    assert list(rows.columns[:len(BASELINE_COLUMNS)]) == BASELINE_COLUMNS
    assert {"std", "n", "n_diverged", "seeds", "recipe", "recipe_hash", "code_version", "date", "saved",
            "machine", "threads", "torch", "stage", "sampler"} <= set(rows.columns)
    scd = rows[(rows.method == "sCD") & (rows.nfe == 1) & (rows.metric == "fid")].iloc[0]
    assert scd.value == pytest.approx(10.0 - 0.1 + 0.1) and scd["std"] == pytest.approx(0.1) and scd.n == 3
    assert (scd.dataset, scd.family, scd.table, scd.recipe, scd.seeds) == ("digits", "distillation", "digits",
                                                                          "digits", "0 1 2")
    assert scd.code_version == "deadbee" and len(scd.recipe_hash) == 12 and scd.date.startswith("2025-01-02")
    assert "digits" in scd.source and "deadbee" in scd.source
    assert set(rows.method) == {"TrigFlow teacher", "sCT", "sCD"} and set(rows.metric) == {"fid", "kid"}
    assert not list(path.parent.glob(".*.tmp"))  # written atomically: no partial file left


def test_a_saved_set_is_listed_and_shown(saved):
    tmp, _ = saved
    listed = cli("baselines", "list", "--baselines-dir", tmp / "baselines")
    line = next(line for line in listed.output.splitlines() if "digits-v1" in line)
    assert "10" in line and "digits" in line and "fid, kid" in line and "scm-bench run of digits" in line
    shown = cli("baselines", "show", "digits-v1", "--baselines-dir", tmp / "baselines")
    assert shown.exit_code == 0 and "over 3 seeds" in shown.output
    assert " 10 ± 0.1 " in shown.output and "code: deadbee" in shown.output
    assert max(map(len, shown.output.splitlines())) <= 100


def _later_report(tmp: Path, baselines: Path, out: str) -> pd.DataFrame:
    later = write_runs(later_recipe(tmp), tmp / "runs", seeds([0]), fid_of=later_fid)
    return write_report(later, tmp / "runs", tmp / out, compare=["digits-v1"], baselines_dir=baselines)


def test_compare_pairs_by_dataset_metric_nfe_and_guidance(saved, tmp_path):
    tmp, path = saved
    rows = pd.read_csv(path, dtype={"size": str})
    moved = rows.astype({"guidance": float})
    moved.loc[(moved.method == "sCD") & (moved.nfe == 2), "guidance"] = 1.5  # another scale: no value beside
    moved.loc[(moved.method == "sCT") & (moved.nfe == 1), "nfe"] = 4  # another NFE: none either
    moved.loc[moved.method == "TrigFlow teacher", "dataset"] = "cifar10"  # another data set: none, nor shown
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    moved.to_csv(baselines / "digits-v1.csv", index=False)
    table = _later_report(tmp, baselines, "results")
    ours = table[table.source == "ours"].set_index(["method", "nfe"])
    assert ours.loc[("scd", 1), "digits-v1 FID"] == pytest.approx(10.0 - 0.1 + 0.1)  # the set's mean
    assert ours.loc[("scd", 1), "ours - digits-v1"] == pytest.approx(-1.1)  # ours (seed 0) - the set's mean
    assert ours.loc[("sct", 2), "digits-v1 FID"] == pytest.approx(11.0 - 0.2 + 0.1)
    assert ours.loc[("scd", 1), "digits-v1 kid"] == pytest.approx(rows[(rows.method == "sCD") & (rows.nfe == 1) & (
        rows.metric == "kid")].value.iloc[0])
    for method, nfe in (("scd", 2), ("sct", 1), ("diffusion", 35)):
        assert math.isnan(ours.loc[(method, nfe), "digits-v1 FID"]), (method, nfe)  # never a neighbour's value
    theirs = table[table.source == "digits-v1"]
    assert set(zip(theirs.method, theirs.nfe, theirs.guidance)) == {("sct", 4, 1.0), ("sct", 2, 1.0),
                                                                   ("scd", 1, 1.0), ("scd", 2, 1.5)}
    assert theirs[theirs.nfe == 1].fid.iloc[0] == pytest.approx(10.0)
    markdown = (tmp / "results" / "digits_later" / "table.md").read_text()
    assert "| digits-v1 |" in markdown and "digits-v1 FID" in markdown
    moved.sample(frac=1.0, random_state=3).to_csv(baselines / "digits-v1.csv", index=False)  # rows shuffled
    again = _later_report(tmp, baselines, "shuffled")
    pd.testing.assert_frame_equal(again.drop(columns="grid"), table.drop(columns="grid"))


def _set(rows: list[tuple]) -> BaselineSet:
    frame = pd.DataFrame(rows, columns=["dataset", "method", "size", "nfe", "guidance", "metric", "value"])
    return BaselineSet("s", Path("s.csv"), frame)


def _ours(method: str, size: str = "", nfe: int = 1, guidance: float = 1.0, dataset: str = "cifar10"):
    return pd.DataFrame([{"dataset": dataset, "method": method, "size": size, "nfe": nfe, "guidance": guidance,
                          "metric": "fid"}])


def test_a_new_method_pairs_with_the_sets_only_method_and_never_with_an_ambiguous_one():
    one = _set([("cifar10", "sCD", "", 1, None, "fid", 3.0), ("cifar10", "sCD", "", 2, None, "fid", 2.5)])
    assert paired_values(_ours("fastcm"), one).iloc[0] == 3.0  # a method the set lacks: the set's value there
    assert paired_values(_ours("scd", nfe=2), one).iloc[0] == 2.5  # ours: sCD in the set's spelling
    assert math.isnan(paired_values(_ours("scd", guidance=1.5), one).iloc[0])
    assert math.isnan(paired_values(_ours("fastcm", dataset="imagenet64"), one).iloc[0])
    two = _set([("cifar10", "sCD", "", 1, None, "fid", 3.0), ("cifar10", "sCT", "", 1, None, "fid", 2.8)])
    assert math.isnan(paired_values(_ours("fastcm"), two).iloc[0])  # two methods there: ambiguous, none
    assert paired_values(_ours("sct"), two).iloc[0] == 2.8
    sized = _set([("imagenet64", "sCD", "S", 1, None, "fid", 3.0), ("imagenet64", "sCD", "M", 1, None, "fid", 2.0)])
    assert paired_values(_ours("scd", "M", dataset="imagenet64"), sized).iloc[0] == 2.0


def test_save_refuses_bad_names_and_existing_sets(saved, tmp_path):
    tmp, path = saved
    common = ["--runs-dir", tmp / "runs", "--baselines-dir", tmp / "baselines"]
    for name in ("../escape", "a/b", ".hidden", "with space", "ours"):
        one_error_line(cli("baselines", "save", DIGITS, "--as", name, *common), repr(name))
    one_error_line(cli("baselines", "save", DIGITS, "--as", "x.csv", *common), "without it")
    before = path.read_bytes()
    one_error_line(cli("baselines", "save", DIGITS, "--as", "digits-v1", *common), "exists", "--overwrite")
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp / "baselines").iterdir()) == ["digits-v1.csv"]  # nothing else written
    replaced = cli("baselines", "save", DIGITS, "--as", "digits-v1", "--overwrite", *common)
    assert replaced.exit_code == 0 and pd.read_csv(path).shape == pd.read_csv(io.BytesIO(before)).shape


def test_save_refuses_a_run_with_nothing_finished(tmp_path):
    plan = plan_jobs(load_recipe(DIGITS), tmp_path / "runs")
    write_manifest(tmp_path / "runs", DIGITS, plan, [], False, "local")  # planned, nothing evaluated
    common = ["--runs-dir", tmp_path / "runs", "--baselines-dir", tmp_path / "baselines"]
    one_error_line(cli("baselines", "save", DIGITS, "--as", "empty", *common), "no finished evaluations")
    one_error_line(cli("baselines", "save", "no_such_recipe", "--as", "empty", *common), "no run of no_such_recipe")
    assert not (tmp_path / "baselines").exists()


def test_bad_baseline_files_and_unknown_sets(tmp_path):
    folder = tmp_path / "baselines"
    folder.mkdir()
    (folder / "good.csv").write_text((BASELINES / "competitors.csv").read_text())
    one_error_line(cli("baselines", "show", "nope", "--baselines-dir", folder), "no baseline set 'nope'", "good")
    (folder / "broken.csv").write_text("table,dataset,method,family,size,params_m,nfe,guidance,source\n"
                                       "t,cifar10,X,training,,,1,,somewhere\n")
    one_error_line(cli("baselines", "list", "--baselines-dir", folder), "broken.csv", "missing columns metric, value")
    one_error_line(cli("baselines", "show", "broken", "--baselines-dir", folder), "missing columns metric, value")
    with pytest.raises(ValueError, match="missing columns metric, value"):
        read_set(folder, "broken")


def test_compare_names_that_are_both_a_run_and_a_set_are_an_error(saved, tmp_path):
    tmp, path = saved
    folder = tmp_path / "baselines"
    folder.mkdir()
    (folder / "digits.csv").write_bytes(path.read_bytes())  # a set named like the run under runs/
    common = ["--runs-dir", tmp / "runs", "--results-dir", tmp_path / "out", "--baselines-dir", folder]
    one_error_line(cli("report", DIGITS, "--compare", "digits", *common), "--compare digits", "both a run",
                   "give the recipe file")
    assert not (tmp_path / "out").exists()
    by_file = cli("report", DIGITS, "--compare", folder / "digits.csv", *common)
    assert by_file.exit_code == 0, by_file.output
    one_error_line(cli("report", DIGITS, "--compare", "nothing_here", *common), "--compare nothing_here",
                   "no baseline set 'nothing_here'")


def test_a_difference_from_a_set_is_marked_only_beyond_the_noise():
    """ours - NAME carries its verdict: a published number (no spread) outside our interval, or a saved set whose
    interval over seeds does not overlap ours."""
    rows = [("cifar10", "sCD", "", 1, None, "fid", 3.0, math.nan, 1),
            ("cifar10", "sCD", "", 2, None, "fid", 2.5, 0.05, 3)]
    frame = pd.DataFrame(rows, columns=["dataset", "method", "size", "nfe", "guidance", "metric", "value", "std", "n"])
    baseline = BaselineSet("s", Path("s.csv"), frame)
    settings = pd.DataFrame([{"source": "ours", "setting": "", "stage": "scd", "method": "scd", "size": "",
                              "sampler": "consistency", "nfe": nfe, "guidance": 1.0, "sigma_rel": "", "metric": "fid"}
                             for nfe in (1, 2)])
    table = settings.drop(columns="metric").assign(fid=[3.5, 2.52], fid_ci_low=[3.2, 2.4], fid_ci_high=[3.8, 2.64])
    datasets = settings.drop(columns="metric").assign(dataset="cifar10")
    table = with_set_values(table, settings, datasets, [baseline])
    assert list(table["ours - s noise"]) == ["beyond noise", "within noise"]  # 3.0 outside [3.2, 3.8]; overlap
    cells = list(table["ours - s"])
    assert cells == pytest.approx([0.5, 0.02])
