"""Lazy package exports (``pacore_agents._lazy``): one source of truth, every name resolves, and
the light import paths (the CLI's entry module, a grading worker) stay light."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import anyio
import pytest

import pacore_agents
import pacore_agents.execution
import pacore_agents.studies
from pacore_agents._lazy import type_checking_imports
from pacore_agents.studies import Grader

from ._probe_checks import HEAVY, heavy_modules_check

PACKAGES = [pacore_agents, pacore_agents.studies, pacore_agents.execution]


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_the_type_checking_block_and_all_list_the_same_names(package: types.ModuleType) -> None:
    exports = type_checking_imports(package.__file__ or "")
    assert sorted(exports) == sorted(package.__all__)
    assert len(package.__all__) == len(set(package.__all__))


@pytest.mark.parametrize("package", PACKAGES, ids=lambda p: p.__name__)
def test_every_public_name_is_the_object_its_module_defines(package: types.ModuleType) -> None:
    for name, module in type_checking_imports(package.__file__ or "").items():
        value = getattr(package, name)
        assert value is getattr(importlib.import_module(module, package.__name__), name), name
        assert name in vars(package)  # cached: the next access is a plain lookup
    assert set(package.__all__) <= set(dir(package))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        pacore_agents.Nope  # noqa: B018
    with pytest.raises(ImportError, match="Nope"):
        from pacore_agents.studies import Nope  # type: ignore[attr-defined]  # noqa: F401


def test_from_import_of_a_lazy_name_works_in_a_fresh_interpreter() -> None:
    code = ("from pacore_agents import run, Topology\nfrom pacore_agents.studies import run_study\n"
            "print(run.__module__, Topology.__module__, run_study.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["pacore_agents._run", "pacore_agents._topology", "pacore_agents.studies._runner"]


def test_the_cli_module_and_the_grading_worker_module_import_nothing_heavy() -> None:
    """A grading worker started under ``pacore`` re-imports the entry script (``pacore_agents.cli``,
    multiprocessing's main fix-up) and then its own module: both must stay light."""
    code = ("import sys, pacore_agents.cli, pacore_agents.studies._grading_worker\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == []


def test_a_grading_worker_loads_none_of_the_runtime() -> None:
    async def main() -> tuple[str, str | None]:
        async with Grader(workers=1, timeout=30, check=heavy_modules_check) as grader:
            grade = await grader.grade("#### 1", "\\boxed{1}")
            return grade.status, grade.detail

    status, detail = anyio.run(main)
    assert (status, detail) == ("correct", None)
