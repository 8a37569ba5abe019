"""Training methods behind one interface (`Method`), found by name.

`method_class(name)` resolves, in order: a built-in (diffusion, sct, scd, discrete-ct, vsd, scd-vsd, multistep-scd,
meanflow), a method installed by another package under the entry-point group `scm_bench.methods` (name = the entry
point's name), or a `module:Class` path (a class importable from the Python path).
"""
import importlib
from importlib.metadata import entry_points

from .base import Method, MethodSettings, Networks, SamplingError, SamplingSettings, Setting, Trained
from .consistency import ConsistencyModel, ConsistencySampling
from .diffusion import Diffusion
from .discrete_ct import DiscreteCT
from .meanflow import MeanFlow
from .multistep_scd import MultistepSCD
from .scd import SCD
from .scd_vsd import SCDVSD
from .sct import SCT
from .vsd import VSD

ENTRY_POINT_GROUP = "scm_bench.methods"
BUILT_IN: dict[str, type[Method]] = {cls.name: cls for cls in (Diffusion, SCT, SCD, DiscreteCT, VSD, SCDVSD,
                                                              MultistepSCD, MeanFlow)}


class UnknownMethod(ValueError):
    """A method name that resolves to nothing; the message says what exists and how to add one."""


def installed() -> dict[str, object]:
    """The entry points of other packages' methods, by name (not loaded)."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every name a recipe can use without a module path: the built-ins and the installed methods."""
    return sorted({*BUILT_IN, *installed()})


def _checked(cls, where: str) -> type[Method]:
    """The class, if it is a complete method; else UnknownMethod saying what is missing."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise UnknownMethod(f"{where} is not a subclass of scm.methods.Method; point it at a method class")
    missing = sorted(cls.__abstractmethods__)
    missing += [attribute for attribute in ("name", "label", "Sampling") if not hasattr(cls, attribute)]
    if missing:
        raise UnknownMethod(f"{where} does not implement {', '.join(missing)}; add them (see scm/methods/base.py)")
    if not (issubclass(cls.Settings, MethodSettings) and issubclass(cls.Sampling, SamplingSettings)):
        raise UnknownMethod(f"{where}: its Settings and Sampling must subclass MethodSettings and SamplingSettings")
    if not cls.networks or (any(n.start == "teacher" for n in cls.networks) and not cls.reads_teacher):
        raise UnknownMethod(f"{where}: networks must name at least one network, and one that starts from the "
                            "teacher needs reads_teacher = True")
    return cls


def _import(path: str) -> type[Method]:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise UnknownMethod(f"method {path!r}: cannot import {module_name} ({error}); check that it is on the "
                            "Python path (pip install -e your package)") from None
    if not hasattr(module, attribute):
        raise UnknownMethod(f"method {path!r}: {module_name} has no {attribute}; check the class name")
    return _checked(getattr(module, attribute), f"method {path!r}")


def method_class(name: str) -> type[Method]:
    """The method class a recipe's `method:` names (see the module docstring)."""
    if name in BUILT_IN:
        return BUILT_IN[name]
    if ":" in name:
        return _import(name)
    points = installed()
    if name in points:
        try:
            loaded = points[name].load()
        except Exception as error:  # noqa: BLE001 - a broken plugin is reported, whatever it raised
            raise UnknownMethod(f"method {name!r}: its entry point {points[name].value} failed to load "
                                f"({type(error).__name__}: {error}); fix or reinstall that package") from None
        return _checked(loaded, f"method {name!r} (entry point {points[name].value})")
    raise UnknownMethod(f"{name!r} is not a known method; use one of {', '.join(available())}, or module:Class "
                        f"(a class importable from the Python path), or install a package with an entry point in "
                        f"the group {ENTRY_POINT_GROUP}")


__all__ = ["Method", "MethodSettings", "SamplingError", "SamplingSettings", "Setting", "Trained", "Networks",
           "ConsistencyModel", "ConsistencySampling", "Diffusion", "SCT", "SCD", "DiscreteCT", "VSD", "SCDVSD",
           "MultistepSCD", "BUILT_IN",
           "ENTRY_POINT_GROUP", "UnknownMethod", "method_class", "available", "installed"]
