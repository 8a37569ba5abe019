"""The paper recipes (recipes/table*.yaml, recipes/fig6*.yaml): they load and expand, and carry the paper's numbers.

The numbers checked are the ones a wrong copy would silently change the result of: sizes, learning rates and their
0.01 x teacher relation, iterations, dropout, noise proposals, guidance, batch sizes and their split over ranks.
The sizes and sCD guidance scales are checked against the paper's numbers stored in results/baselines/.
"""
import csv
import math
import re
from pathlib import Path

import pytest

from harness.recipe.load import load_recipe
from harness.recipe.planner import plan_jobs
from harness.recipe.sweep import expand_sweep

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
BASELINES = ROOT / "results" / "baselines" / "sCM_paper.csv"  # a copy of the paper's published numbers
PAPER = ["table1_cifar10", "table1_imagenet64", "table2_sct", "table2_scd", "fig6_scaling_64", "fig6_scaling_512"]
SIZES_512 = ["S", "M", "L", "XL", "XXL"]
SIZES_64 = ["S", "M", "L", "XL"]

# sCM Tables 4-5 (App. G.2): teacher lr_ref and iterations per size
TEACHER_LR = {"S": 1e-2, "M": 9e-3, "L": 8e-3, "XL": 7e-3, "XXL": 6.5e-3}
TEACHER_STEPS_64 = {"S": 1048576, "M": 1486000, "L": 761000, "XL": 540000}
TEACHER_STEPS_512 = {"S": 1048576, "M": 1048576, "L": 696000, "XL": 598000, "XXL": 376000}
TEACHER_SIGMA_REL_64 = {"S": 0.075, "M": 0.06, "L": 0.04, "XL": 0.04}
TEACHER_SIGMA_REL_512 = {"S": 0.025, "M": 0.03, "L": 0.015, "XL": 0.02, "XXL": 0.015}
SCT_DROPOUT_512 = {"S": 0.25, "M": 0.35, "L": 0.35, "XL": 0.35, "XXL": 0.35}
SCD_DROPOUT_512 = {"S": 0.0, "M": 0.1, "L": 0.1, "XL": 0.1, "XXL": 0.1}
SCD_GUIDANCE_512 = {"S": {1.5, 1.4}, "M": {1.3, 1.2}, "L": {1.3, 1.2}, "XL": {1.3, 1.2}, "XXL": {1.3, 1.2}}


def variants(name: str):
    return expand_sweep(load_recipe(RECIPES / f"{name}.yaml"))


def student_of(variant):
    """The stages trained from the teacher (named after their method in the paper recipes)."""
    return [name for name, stage in variant.stages.items() if stage.init is not None]


def proposal(stage):
    return stage.settings.p_mean, stage.settings.p_std


def baselines() -> list[dict]:
    with BASELINES.open() as f:
        return list(csv.DictReader(f))


# ---- every recipe ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.name)
def test_recipe_loads_and_expands(path):
    recipe = load_recipe(path)
    expanded = expand_sweep(recipe)
    assert expanded and all(v.name == recipe.name for v in expanded)
    assert len({v.variant for v in expanded}) == len(expanded)
    assert plan_jobs(recipe, Path("runs")).train  # job ids (content hashes) can be made for every variant


def test_the_six_paper_recipes_exist():
    for name in PAPER:
        assert (RECIPES / f"{name}.yaml").is_file(), name


@pytest.mark.parametrize("name", PAPER)
def test_paper_recipe_common_settings(name):
    for v in variants(name):
        assert v.executor == "slurm"
        assert v.sigma_data == 0.5
        assert v.network.time_embedding == "positional" and v.network.c_noise == "t"
        assert v.network.modulation == "double-norm"
        assert v.stages["teacher"].method == "diffusion" and v.stages["teacher"].sampling.sampler == "dpm-solver-2s"
        assert v.evaluation.features == "inception" and v.evaluation.reference
        classes = 1 if not v.data.class_conditional else 1000  # unconditional: samples_per_class is the total
        assert v.evaluation.samples_per_class * classes == 50_000
        for name in student_of(v):
            stage = v.stages[name]
            assert stage.method == name and stage.init == "teacher" and stage.sampling.steps == [1, 2]
            assert stage.teacher == ("teacher" if name == "scd" else None)
            tangent = stage.settings.tangent
            assert (tangent.normalization, tangent.norm_constant, tangent.warmup_steps) == ("norm", 0.1, 10_000)


@pytest.mark.parametrize("name", PAPER)
def test_batches_split_over_ranks(name):
    for v in variants(name):
        for method in ("teacher", *student_of(v)):
            stage, world = v.stages[method], v.stage_resources(method).world_size
            assert stage.batch_size % world == 0, (v.variant, method)
            share = stage.batch_size // world
            assert stage.micro_batch is None or share % stage.micro_batch == 0, (v.variant, method)
            assert stage.batch_size == (512 if v.data.name == "cifar10" else 2048)


# ---- CIFAR-10 -------------------------------------------------------------------------------------------------------

def test_table1_cifar10():
    (v,) = variants("table1_cifar10")
    assert v.data.name == "cifar10" and v.network.name == "ddpmpp" and not v.data.class_conditional
    assert (v.network.channels, v.network.channel_mult, v.network.blocks_per_level) == (128, [2, 2, 2], 4)
    t, sct, scd = v.stages["teacher"], v.stages["sct"], v.stages["scd"]
    assert (t.optimizer.name, t.optimizer.lr, tuple(t.optimizer.betas), t.optimizer.eps) == \
        ("adam", 1e-3, (0.9, 0.999), 1e-8)
    assert t.steps == 400_000 and t.dropout == 0.13 and proposal(t) == (-1.2, 1.2)
    for stage in (sct, scd):
        opt = stage.optimizer
        assert (opt.name, opt.lr, tuple(opt.betas), opt.eps, opt.schedule) == ("radam", 1e-4, (0.9, 0.99), 1e-8,
                                                                               "constant")
        assert proposal(stage) == (-1.0, 1.4)
    assert sct.dropout == 0.2 and scd.dropout == 0.0
    for stage in (t, sct, scd):
        assert (stage.ema.kind, stage.ema.halflife_images) == ("halflife", 500_000)
    assert t.sampling.steps == 18 and t.sampling.guidance == 1.0


def dropout_resolutions(v) -> dict:
    """Teachers drop out in every block (EDM2 config G), consistency models only at res <= 16 (sCM App. G.2)."""
    return {name: stage.dropout_max_resolution for name, stage in v.stages.items()}


# ---- ImageNet 64 ----------------------------------------------------------------------------------------------------

def check_imagenet64(v):
    size = v.network.size
    t = v.stages["teacher"]
    assert v.data.name == "imagenet64" and v.network.name == "unet-edm2"
    assert dropout_resolutions(v) == {"teacher": None, **{s: 16 for s in v.stages if s != "teacher"}}
    assert t.steps == TEACHER_STEPS_64[size] and t.ema.sigma_rel == TEACHER_SIGMA_REL_64[size]
    assert (t.optimizer.lr, t.optimizer.ref_steps, t.optimizer.schedule) == (TEACHER_LR[size], 35000, "inverse-sqrt")
    assert proposal(t) == (-0.8, 1.6)
    for method in student_of(v):
        stage = v.stages[method]
        assert stage.steps == 400_000 and proposal(stage) == (-1.0, 1.6)
        assert stage.dropout == (0.45 if method == "sct" else 0.0)
        assert stage.ema.sigma_rel == 0.05
    assert t.sampling.steps == 32


def test_table1_imagenet64_has_the_sizes_table1_reports():
    vs = variants("table1_imagenet64")
    reported = {row["size"] for row in baselines() if row["table"] == "table1" and row["dataset"] == "imagenet64"
                and row["method"] in ("sCT", "sCD")}
    assert {v.network.size for v in vs} == reported == {"XL"}
    for v in vs:
        assert student_of(v) == ["sct", "scd"]
        check_imagenet64(v)


def test_fig6_scaling_64():
    vs = variants("fig6_scaling_64")
    assert sorted((v.network.size, student) for v in vs for student in student_of(v)) == \
        sorted((s, m) for s in SIZES_64 for m in ("sct", "scd"))
    fig6 = {row["size"] for row in baselines() if row["table"] == "fig6" and row["dataset"] == "imagenet64"}
    assert fig6 == set(SIZES_64)
    for v in vs:
        check_imagenet64(v)
    plan = plan_jobs(load_recipe(RECIPES / "fig6_scaling_64.yaml"), Path("runs"))
    assert len(plan.train) == 4 + 8  # one teacher per size, shared by sCT and sCD


# ---- ImageNet 512 ---------------------------------------------------------------------------------------------------

def check_imagenet512(v):
    size = v.network.size
    t = v.stages["teacher"]
    assert v.data.name == "imagenet512-latents" and v.network.name == "unet-edm2"
    assert dropout_resolutions(v) == {"teacher": None, **{s: 16 for s in v.stages if s != "teacher"}}
    assert t.steps == TEACHER_STEPS_512[size] and t.ema.sigma_rel == TEACHER_SIGMA_REL_512[size]
    assert (t.optimizer.lr, t.optimizer.ref_steps) == (TEACHER_LR[size], 70000)
    assert proposal(t) == (-0.4, 1.0) and t.label_dropout == 0.1
    for method in student_of(v):
        stage = v.stages[method]
        assert proposal(stage) == (-0.8, 1.6)
        assert stage.steps == (100_000 if method == "sct" else 200_000)
        assert stage.dropout == (SCT_DROPOUT_512 if method == "sct" else SCD_DROPOUT_512)[size]
        assert stage.precision == "fp16"
    if "scd" in v.stages:
        scd = v.stages["scd"]
        assert scd.settings.guidance_input and tuple(scd.settings.guidance) == (1.0, 2.0)
        assert set(scd.sampling.metric_guidance["fid"]) == SCD_GUIDANCE_512[size]


def test_table2_sct():
    vs = variants("table2_sct")
    assert [v.network.size for v in vs] == SIZES_512
    for v in vs:
        assert student_of(v) == ["sct"]
        check_imagenet512(v)


def test_table2_scd():
    vs = variants("table2_scd")
    assert [v.network.size for v in vs] == SIZES_512
    for v in vs:
        assert student_of(v) == ["scd"]
        check_imagenet512(v)


def paper_scales(method: str, metric: str) -> dict[str, set[float]]:
    """{size: the guidance scales of the paper's Table 2 / 6 rows of `method` for `metric`}."""
    scales = {}
    for row in baselines():
        if row["table"] == "table2" and row["method"] == method and row["metric"] == metric and row["guidance"]:
            scales.setdefault(row["size"], set()).add(float(row["guidance"]))
    return scales


@pytest.mark.parametrize("recipe", ["table2_scd", "fig6_scaling_512"])
def test_imagenet512_guidance_per_metric_matches_the_paper(recipe):
    """sCM Table 6 reports FID and FD_DINOv2 at their own scales: each is sampled and reported at the paper's."""
    assert paper_scales("sCD", "fid") == SCD_GUIDANCE_512
    for v in variants(recipe):
        size = v.network.size
        for metric in ("fid", "fd_dinov2"):
            assert set(v.stages["scd"].sampling.metric_guidance[metric]) == paper_scales("sCD", metric)[size]
            teacher = set(v.stages["teacher"].sampling.metric_guidance[metric])
            assert teacher == paper_scales("TrigFlow teacher", metric)[size], (size, metric)


def test_fig6_scaling_512():
    recipe = load_recipe(RECIPES / "fig6_scaling_512.yaml")
    vs = expand_sweep(recipe)
    assert sorted((v.network.size, student) for v in vs for student in student_of(v)) == \
        sorted((s, m) for s in SIZES_512 for m in ("sct", "scd"))
    for v in vs:
        check_imagenet512(v)
    plan = plan_jobs(recipe, Path("runs"))
    assert len(plan.train) == 5 + 10  # one teacher per size, shared by sCT and sCD
    # ... and by Table 2's recipes: one content-addressed job, whichever recipe asks for it
    teachers = {job.id for job in plan.train if job.stage == "teacher"}
    for name in ("table2_sct", "table2_scd"):
        assert {job.id for job in plan_jobs(load_recipe(RECIPES / f"{name}.yaml"), Path("runs")).train
                if job.stage == "teacher"} == teachers


@pytest.mark.parametrize("name", [n for n in PAPER if n != "table1_cifar10"])
def test_imagenet_students_use_the_teachers_adam_at_a_hundredth(name):
    for v in variants(name):
        t = v.stages["teacher"].optimizer
        assert (t.name, tuple(t.betas), t.eps) == ("adam", (0.9, 0.99), 1e-11)
        for method in student_of(v):
            s = v.stages[method].optimizer
            assert math.isclose(s.lr, 0.01 * t.lr, rel_tol=1e-9), (v.variant, method)
            assert (s.name, tuple(s.betas), s.eps, s.schedule, s.ref_steps) == \
                (t.name, tuple(t.betas), t.eps, t.schedule, t.ref_steps)
            assert v.stages[method].precision == "fp16"


# ---- every number carries its source --------------------------------------------------------------------------------

def unsourced_lines(text: str) -> list[str]:
    """Lines whose value part (after the first ':', or the whole line for list items) has a digit but no comment."""
    bad = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        code = stripped.split("#", 1)[0]
        value = code.split(":", 1)[1] if ":" in code else code
        if re.search(r"\d", value) and "#" not in stripped:
            bad.append(line)
    return bad


def test_unsourced_lines_scan():
    sample = "a: 1  # sCM App. G\nb: 2\n# c: 3\nname: x\n- [1, 2]\nkey2: text\n"
    assert unsourced_lines(sample) == ["b: 2", "- [1, 2]"]


@pytest.mark.parametrize("name", PAPER)
def test_every_number_has_a_source_comment(name):
    assert unsourced_lines((RECIPES / f"{name}.yaml").read_text()) == []


def test_table7_and_fig7_share_table2s_m_teacher_and_their_networks():
    """Table 7 / Fig. 7 train nothing Table 2 already trains: the EDM2-M teacher is table2_scd's size=M job, and
    fig7_guidance's four trainings are table7_imagenet512's (only how they are sampled differs)."""
    def train_ids(name, stage=None):
        plan = plan_jobs(load_recipe(RECIPES / f"{name}.yaml"), Path("runs"))
        return {job.stage: job.id for job in plan.train if stage is None or job.stage == stage}

    table2 = plan_jobs(load_recipe(RECIPES / "table2_scd.yaml"), Path("runs")).train
    m_teacher = next(job.id for job in table2 if job.stage == "teacher" and job.size == "M")
    table7, fig7 = train_ids("table7_imagenet512"), train_ids("fig7_guidance")
    assert table7["teacher"] == fig7["teacher"] == m_teacher
    assert {stage: table7[stage] for stage in fig7} == fig7 and set(fig7) == {"teacher", "scd", "vsd", "scd_vsd"}


def test_table3_is_ects_network_and_settings_for_both():
    """sCM App. E.3: DDPM++ without AdaGN (EDM's block: 55.7 M parameters, ECT's network), batch 128, dropout 0.20,
    sCT at (-1.0, 1.8); ECT's step from its code; FID at 100k, 200k and 400k for both."""
    recipe = load_recipe(RECIPES / "table3_ect_cifar10.yaml")
    assert recipe.network.name == "ddpmpp" and recipe.network.modulation == "edm"
    sct, ect = recipe.stages["sct"], recipe.stages["ect"]
    assert (sct.batch_size, sct.dropout, ect.batch_size, ect.dropout) == (128, 0.2, 128, 0.2)
    assert (sct.settings.p_mean, sct.settings.p_std) == (-1.0, 1.8)
    assert ect.method == "discrete-ct" and ect.settings.ect.q == 2 and ect.settings.discrete_steps is None
    assert sct.during_training == ect.during_training == [100000, 200000] and sct.steps == ect.steps == 400000
