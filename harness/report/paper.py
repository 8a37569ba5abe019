"""Published numbers (results/baselines/*.csv: the sCM paper's, and its competitors' from their own papers) and
which of them a recipe sits beside."""
from pathlib import Path

import pandas as pd

BASELINES = Path(__file__).resolve().parents[2] / "results" / "baselines"

# our recipe -> the paper's (table, dataset) in the baselines csv; smoke runs ("NAME-smoke") map like NAME
PAPER_TABLES = {
    "table7_imagenet512": ("table7", "imagenet512"),  # Table 7 and Table 6's M column (multistep sCD)
    "fig7_guidance": ("table7", "imagenet512"),  # Fig. 7's values are not in the text; Table 7 at its scales
    "meanflow_cifar10": ("meanflow", "cifar10"),
    "table3_ect_cifar10": ("table3", "cifar10"),  # ECT / sCT at 100k..400k: shown beside ours for context
    "table1_cifar10": ("table1", "cifar10"),
    "table1_imagenet64": ("table1", "imagenet64"),
    "table2_sct": ("table2", "imagenet512"),
    "table2_scd": ("table2", "imagenet512"),
    "fig6_scaling_64": ("fig6", "imagenet64"),
    # Fig. 6's ImageNet 512 points are Table 2's numbers; the csv stores them once, as table2 rows
    "fig6_scaling_512": ("table2", "imagenet512"),
}
# the csv's spelling of the built-in methods (its other methods are the paper's baselines)
PAPER_METHODS = {"diffusion": "TrigFlow teacher", "sct": "sCT", "scd": "sCD", "vsd": "VSD", "scd-vsd": "sCD+VSD",
                 "multistep-scd": "multistep sCD", "meanflow": "MeanFlow"}
ODE_FAMILY = "diffusion"  # the paper's rows of diffusion models: paired with ours at any NFE (solver budgets differ)


def load_baselines(path: Path = BASELINES) -> pd.DataFrame:
    """The published numbers (one row per table, dataset, method, size, NFE and metric) of a csv file, or of every
    csv file in a folder."""
    path = Path(path)
    frame = pd.concat([pd.read_csv(p) for p in sorted(path.glob("*.csv"))] if path.is_dir() else [pd.read_csv(path)],
                      ignore_index=True)
    return frame.assign(size=frame["size"].fillna("").astype(str))


def paper_rows(recipe_name: str, baselines: pd.DataFrame) -> pd.DataFrame:
    """The baselines of the paper's table that this recipe reproduces (none for recipes without one, e.g. digits)."""
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    if where is None:
        return baselines.iloc[:0]
    table, dataset = where
    return baselines[(baselines.table == table) & (baselines.dataset == dataset)]
