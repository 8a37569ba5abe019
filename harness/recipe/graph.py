"""The checks of a recipe that span its stages: the graph of `init:` and `teacher:` references (every name known,
no cycle, a teacher exactly where the method reads one), label dropout where classifier-free guidance is used, FID
over training at real checkpoints, and batches that split over the ranks. Each failure is one line that names the
field and the fix."""
import difflib

from .refs import OUTSIDE_FORMS, REF_FORMS, local


def check_graph(recipe) -> None:
    """Raise ValueError on the first problem (see the module docstring)."""
    for name, stage in recipe.stages.items():
        _check_references(recipe, name, stage)
    _check_cycles(recipe)
    for name, stage in recipe.stages.items():
        _check_guidance(recipe, name, stage)
        _check_during_training(name, stage)
        _check_batch_split(recipe, name, stage)


def _check_references(recipe, name: str, stage) -> None:
    for field in ("init", "teacher"):
        ref = local(getattr(stage, field))
        if ref is not None and ref not in recipe.stages:
            close = difflib.get_close_matches(ref, list(recipe.stages), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise ValueError(f"stages.{name}.{field}: {ref!r} is not a stage of this recipe; {hint}use one of "
                             f"{', '.join(recipe.stages)} (or {OUTSIDE_FORMS})")
    reads = stage.method_class.reads_teacher
    if reads and stage.teacher is None:
        raise ValueError(f"stages.{name}.teacher: method {stage.method} reads a teacher but none is given; set "
                         f"teacher: to {REF_FORMS}")
    if not reads and stage.teacher is not None:
        raise ValueError(f"stages.{name}.teacher: method {stage.method} does not read a teacher; remove teacher: "
                         "(init: sets where its weights start)")


def _check_cycles(recipe) -> None:
    def parents(name):
        stage = recipe.stages[name]
        return [ref for ref in (local(stage.init), local(stage.teacher)) if ref is not None]

    done, path = set(), []

    def visit(name):
        if name in path:
            loop = path[path.index(name):] + [name]
            raise ValueError(f"stages: {' -> '.join(loop)}: init and teacher references form a cycle; let one of "
                             "these stages start fresh or from a stage outside the loop")
        if name in done:
            return
        path.append(name)
        for parent in parents(name):
            visit(parent)
        path.pop()
        done.add(name)

    for name in recipe.stages:
        visit(name)


def _check_guidance(recipe, name: str, stage) -> None:
    """Classifier-free guidance > 1 needs a network trained with label dropout: the teacher a method guides, and
    a stage sampled with guidance."""
    method = stage.make_method(recipe.sigma_data)
    teacher = local(stage.teacher)
    scale = method.teacher_guidance()
    if scale > 1.0 and teacher is not None and recipe.stages[teacher].label_dropout == 0:
        raise ValueError(f"stages.{name}: classifier-free guidance {scale:g} of its teacher needs a teacher trained "
                         f"with label dropout; set stages.{teacher}.label_dropout (e.g. 0.1) or guidance: 1.0")
    cfg = max(setting.cfg for setting in method.sample_settings(stage.sampling))
    if cfg > 1.0 and stage.label_dropout == 0:
        raise ValueError(f"stages.{name}.sampling.guidance: classifier-free guidance {cfg:g} needs a network trained "
                         f"with label dropout; set stages.{name}.label_dropout (e.g. 0.1) or guidance: 1.0")


def _check_during_training(name: str, stage) -> None:
    for step in stage.during_training:
        if not 0 < step < stage.steps or step % stage.checkpoint_every:
            raise ValueError(f"stages.{name}.during_training: step {step} is not a checkpoint of stages.{name} "
                             f"(multiples of checkpoint_every {stage.checkpoint_every} below steps {stage.steps}); "
                             f"use such steps, e.g. [{stage.checkpoint_every}]")


def _check_batch_split(recipe, name: str, stage) -> None:
    world = recipe.stage_resources(name).world_size
    if stage.batch_size % world:
        raise ValueError(f"stages.{name}.batch_size {stage.batch_size} does not split over {world} ranks "
                         "(nodes x tasks_per_node); use a multiple of it")
    share = stage.batch_size // world
    if stage.micro_batch and share % stage.micro_batch:
        raise ValueError(f"stages.{name}.micro_batch {stage.micro_batch} does not divide the per-rank batch {share} "
                         "(batch_size / ranks); use a divisor of it")
