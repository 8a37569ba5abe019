"""Published numbers (results/baselines/*.csv: the sCM paper's, and its competitors' from their own papers), which
of them a recipe sits beside, and what every baseline file shares: its columns, the data sets' names, the check that
reads one (the named sets of results/baselines/ are baseline_sets.py)."""
from pathlib import Path

import pandas as pd

BASELINES = Path(__file__).resolve().parents[2] / "results" / "baselines"
# every baseline file's columns (a row: one number of one table); sets saved from runs add provenance columns
BASELINE_COLUMNS = ["table", "dataset", "method", "family", "size", "params_m", "nfe", "guidance", "metric", "value",
                    "source"]
NUMERIC_COLUMNS = ("params_m", "nfe", "guidance", "value")
# a recipe's data.name -> the baseline files' data set; a name not listed is its own (digits, cifar10, imagenet64,
# folder, synthetic: a --smoke run's data, so smoke runs pair with smoke runs only)
DATASETS = {"imagenet512-latents": "imagenet512"}

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
OUR_METHODS = {paper: ours for ours, paper in PAPER_METHODS.items()}
# the paper's family of each built-in method (a saved set's rows carry it; a user's method: "")
METHOD_FAMILIES = {"diffusion": "diffusion", "sct": "training", "discrete-ct": "training", "meanflow": "training",
                   "scd": "distillation", "vsd": "distillation", "scd-vsd": "distillation",
                   "multistep-scd": "distillation"}
ODE_FAMILY = "diffusion"  # the paper's rows of diffusion models: paired with ours at any NFE (solver budgets differ)


class BaselineError(ValueError):
    """A baseline file or set that cannot be used as asked; the message is one line with the fix."""


def dataset_name(data_name: str) -> str:
    """The baseline files' name of a recipe's data set (its data.name): imagenet512-latents -> imagenet512."""
    return DATASETS.get(data_name, data_name)


def read_baseline_file(path: Path) -> pd.DataFrame:
    """One baseline file, checked: every column of BASELINE_COLUMNS there, numbers where numbers belong; size as
    text ("" where the row has none)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"size": str, "table": str, "dataset": str, "method": str, "metric": str})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise BaselineError(f"{path}: cannot be read as a baseline file ({str(error).splitlines()[0]}); fix it or "
                            "move it out of the baselines folder") from None
    missing = [column for column in BASELINE_COLUMNS if column not in frame]
    if missing:
        raise BaselineError(f"{path}: missing columns {', '.join(missing)}; a baseline file needs the columns "
                            f"{','.join(BASELINE_COLUMNS)} (add them to its header row)")
    for column in NUMERIC_COLUMNS:
        try:
            frame[column] = pd.to_numeric(frame[column])
        except (ValueError, TypeError):
            raise BaselineError(f"{path}: column {column} holds text where numbers belong; fix those cells (leave "
                                "a cell empty where the source gives no number)") from None
    return frame.assign(size=frame["size"].fillna("").astype(str))


def load_baselines(path: Path = BASELINES) -> pd.DataFrame:
    """The published numbers (one row per table, dataset, method, size, NFE and metric) of a csv file, or of every
    csv file in a folder."""
    path = Path(path)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    return pd.concat([read_baseline_file(p) for p in files], ignore_index=True)


def paper_rows(recipe_name: str, baselines: pd.DataFrame) -> pd.DataFrame:
    """The baselines of the paper's table that this recipe reproduces (none for recipes without one, e.g. digits);
    published rows only, never a set saved from a run (those carry the recipe they came from)."""
    where = PAPER_TABLES.get(recipe_name.removesuffix("-smoke"))
    if where is None:
        return baselines.iloc[:0]
    table, dataset = where
    published = baselines.recipe.isna() if "recipe" in baselines else True
    return baselines[(baselines.table == table) & (baselines.dataset == dataset) & published]
