"""How `scm-bench plan` reads in a terminal of 80-100 columns: what each sweep axis changes, entry by entry (every
overridden value and dotted key in full), then one line per job (its id in full on a second line), generation
arrays counted beside the other jobs, and the totals. The wide table of every estimate is `plan --details`."""
from rich import box
from rich.table import Table
from rich.text import Text

from ..recipe.schema import Recipe
from ..recipe.sweep import entry_label, value_label


def _text(value) -> str:
    """A sweep value as a recipe writes it."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(_text, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def axis_changes(axis: str, values: list) -> list[tuple[str, dict[str, str]]]:
    """(entry label, {dotted key: value as written}) for each entry of one sweep axis."""
    entries = []
    for value in values:
        if isinstance(value, dict):
            entries.append((entry_label(value), {k: _text(v) for k, v in value.items() if k != "label"}))
        else:
            entries.append((value_label(value), {axis: _text(value)}))
    return entries


def _axis_table(axis: str, entries: list[tuple[str, dict[str, str]]], width: int) -> Table:
    """setting x entry where that fits in `width`; else one row per entry listing its key=value changes."""
    keys = list(dict.fromkeys(key for _, changes in entries for key in changes))
    table = Table(title=f"sweep {axis}: {len(entries)} entries", box=box.SIMPLE_HEAD, title_justify="left")
    cells = [[changes.get(key, "-") for key in keys] for _, changes in entries]
    widths = [max(len(label), *map(len, column)) for (label, _), column in zip(entries, cells)]
    if keys and max(map(len, keys)) + sum(w + 3 for w in widths) + 4 <= width:
        table.add_column("setting", no_wrap=True)
        for (label, _), column_width in zip(entries, widths):
            table.add_column(label, no_wrap=True, min_width=column_width)
        for index, key in enumerate(keys):
            table.add_row(key, *(column[index] for column in cells))
        table.caption, table.caption_justify = "-: not set by that entry", "left"
        return table
    table.add_column("entry", no_wrap=True)
    table.add_column("what it sets", overflow="fold")
    for label, changes in entries:
        table.add_row(label, ", ".join(f"{key}={value}" for key, value in changes.items()) or "(nothing)")
    return table


def print_variants(console, recipe: Recipe) -> None:
    """What each sweep axis changes, entry by entry (a variant is one entry of each axis)."""
    for axis, values in recipe.sweep.items():
        console.print(_axis_table(axis, axis_changes(axis, values), console.width))


def _gpus(row: dict) -> str:
    if not row["gpus_per_node"]:
        return f"{row['ranks']} CPU task" + ("s" if row["ranks"] > 1 else "")
    return f"{row['nodes']}x{row['gpus_per_node']} GPU"


def _work(row: dict) -> str:
    if row["kind"] == "train":
        split = f"{row['batch_size']} ({row['per_rank_batch']}/rank" + (
            f", {row['micro_batch']} x{row['passes']})" if row["passes"] > 1 else ")")
        return f"{row['steps']:,} steps x{row['multiplier']:g}, batch {split}"
    if row["kind"] == "generate":
        return f"{row['samples']:,} samples x {row['nfe']} NFE in {row['array_tasks']} tasks"
    if row.get("array_tasks", 1) > 1:
        return "features and metrics of the generated shards"
    return f"{row['samples']:,} samples x {row['nfe']} NFE"


def _memory(row: dict) -> str:
    if row["memory_gb"] is None:
        return "-"
    return f"{row['memory_gb']:.1f}" + ("" if row["fits"] is not False else " NO")


def print_jobs(console, name: str, rows: list[dict], tflops: float) -> None:
    kinds = {kind: sum(r["kind"] == kind for r in rows) for kind in ("train", "generate", "evaluate")}
    arrays = "".join(f", {kinds['generate']} generation arrays" if kinds["generate"] else "")
    console.print(f"{name}: {kinds['train']} training jobs, {kinds['evaluate']} evaluations{arrays}; "
                  f"{tflops:g} TFLOP/s per GPU assumed", markup=False, highlight=False)
    table = Table(box=box.SIMPLE_HEAD, caption="mem: estimated GB per GPU (NO: does not fit); time: the job's limit",
                  caption_justify="left")
    for column, justify in (("job / id", "left"), ("kind", "left"), ("on", "left"), ("work", "left"),
                            ("GPU-h", "right"), ("mem", "right"), ("time", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        hours = "reused" if row["reused"] else f"{row['gpu_hours']:.3g}"
        job = Text(row["label"] or row["kind"]) + Text("\n" + row["job"], style="dim")
        table.add_row(job, row["kind"], _gpus(row), _work(row), hours, _memory(row), f"{row['time_min']} min")
    console.print(table)
