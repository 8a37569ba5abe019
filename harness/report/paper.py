"""The sCM paper's published numbers (results/baselines/sCM_paper.csv) and which of them a recipe sits beside."""
from pathlib import Path

import pandas as pd

BASELINES = Path(__file__).resolve().parents[2] / "results" / "baselines" / "sCM_paper.csv"

# our recipe -> the paper's (table, dataset) in the baselines csv; smoke runs ("NAME-smoke") map like NAME
PAPER_TABLES = {
    "table1_cifar10": ("table1", "cifar10"),
    "table1_imagenet64": ("table1", "imagenet64"),
    "table2_sct": ("table2", "imagenet512"),
    "table2_scd": ("table2", "imagenet512"),
    "fig6_scaling_64": ("fig6", "imagenet64"),
    # Fig. 6's ImageNet 512 points are Table 2's numbers; the csv stores them once, as table2 rows
    "fig6_scaling_512": ("table2", "imagenet512"),
}
# the csv's spelling of the built-in methods (its other methods are the paper's baselines)
PAPER_METHODS = {"diffusion": "TrigFlow teacher", "sct": "sCT", "scd": "sCD"}
ODE_FAMILY = "diffusion"  # the paper's rows of diffusion models: paired with ours at any NFE (solver budgets differ)


def load_baselines(path: Path = BASELINES) -> pd.DataFrame:
    """The paper's published numbers (one row per table, dataset, method, size, NFE and metric)."""
    frame = pd.read_csv(path)
    return frame.assign(size=frame["size"].fillna("").astype(str))


def paper_rows(recipe_name: str, baselines: pd.DataFrame) -> pd.DataFrame:
    """The baselines of the paper's table that this recipe reproduces (none for recipes without one, e.g. digits)."""
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    if where is None:
        return baselines.iloc[:0]
    table, dataset = where
    return baselines[(baselines.table == table) & (baselines.dataset == dataset)]
