"""The comparison of methods (a table ordered by 1-step FID, FID against compute) and Fig. 7's plot of FID,
precision and recall against guidance, from synthetic metrics rows with known means."""
import pandas as pd

from harness.report.guidance_plot import guidance_figure, write_guidance_plot
from harness.report.methods import comparison_table, write_comparison
from harness.report.rows import rows_frame


def _rows():
    """Two methods, two seeds, 1 and 2 steps; FIDs chosen so the order and the means are known."""
    rows = []
    fids = {("sct", 1): (10.0, 12.0), ("sct", 2): (7.0, 7.0), ("vsd", 1): (8.0, 9.0), ("multistep-scd", 2): (6.0, 6.5)}
    for (method, nfe), values in fids.items():
        for seed, fid in enumerate(values):
            for step, intermediate, scale in ((50, True, 2.0), (100, False, 1.0)):
                common = {"method": method, "method_label": method.upper(), "stage": method, "variant": f"seed={seed}",
                          "seed": seed, "nfe": nfe, "job": f"{method}-{seed}", "teacher_job": "teacher",
                          "intermediate": intermediate, "checkpoint_step": step, "train_compute": 1000.0 * step,
                          "seconds_per_step": 0.1, "train_seconds": 0.1 * step}
                rows += [{**common, "metric": "fid", "value": fid * scale},
                         {**common, "metric": "precision", "value": 0.5 + 0.1 * seed},
                         {**common, "metric": "recall", "value": 0.4}]
    return rows_frame(rows).assign(source="ours")


def test_methods_are_ordered_by_one_step_fid_with_the_spread_over_seeds(tmp_path):
    table = comparison_table(_rows())
    assert list(table.method) == ["vsd", "sct", "multistep-scd"]  # 8.5 < 11.0, then the one without 1-step rows
    sct = table.set_index("method").loc["sct"]
    assert sct.fid_1 == 11.0 and abs(sct.fid_1_std - 2 ** 0.5) < 1e-12 and sct.fid_2 == 7.0
    assert abs(sct.precision_1 - 0.55) < 1e-12 and sct.train_compute == 100_000  # final checkpoints only
    paths, section = write_comparison(_rows(), tmp_path, "test")
    assert (tmp_path / "fid_vs_compute.png").is_file() and (tmp_path / "comparison.csv").is_file()
    assert "11.000 ± 1.414" in section and section.index("VSD") < section.index("SCT")
    one = _rows()
    assert comparison_table(one[one.method == "sct"]) is None  # one method: nothing to compare


def test_fid_precision_recall_against_guidance_needs_three_scales(tmp_path):
    table = pd.DataFrame({"source": "ours", "setting": "", "stage": "vsd", "method": "vsd", "method_label": "VSD",
                          "sampler": "consistency",
                          "nfe": 1, "guidance": [1.0, 1.5, 2.0], "fid": [5.0, 4.0, 6.0],
                          "precision": [0.6, 0.7, 0.8], "recall": [0.6, 0.5, 0.3]})
    assert guidance_figure(table, "t") is not None
    assert write_guidance_plot(table, tmp_path, "t") and (tmp_path / "metrics_vs_guidance.png").is_file()
    assert guidance_figure(table.iloc[:2], "t") is None
    assert write_guidance_plot(table.iloc[:2], tmp_path, "t") == []
    assert not (tmp_path / "metrics_vs_guidance.png").exists()


def test_a_teacher_whose_cfg_doubles_its_nfe_is_one_line():
    from harness.report.guidance_plot import guided_lines
    table = pd.DataFrame({"source": "ours", "setting": "", "stage": "teacher", "method": "diffusion",
                          "method_label": "teacher", "sampler": "dpm-solver-2s", "guidance": [1.0, 1.5, 2.0],
                          "nfe": [35, 70, 70], "fid": [5.0, 4.0, 6.0]})
    lines = guided_lines(table)
    assert len(lines) == 3 and lines.line.nunique() == 1
