"""dvc.yaml's code deps agree with the code: each stage depends on every `alae` module it
imports (so DVC reruns it when one changes), and the run key hashes exactly those deps."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from alae.codedeps import code_files, files_of, stage_code_deps
from alae.config import parse_params
from alae.tracking import run_key

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(p.stem for p in (ROOT / "stages").glob("*.py"))


def _module_file(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path) -> set[str]:
    """Every module name an import in `path` may load, function-level imports included; for
    `from alae.x import y` both `alae.x` and `alae.x.y` (y may be a submodule)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def import_closure(script: Path) -> set[Path]:
    """The files of `alae` that running `script` may import, each package's __init__ included."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        for name in _imported_names(todo.pop()):
            parts = name.split(".")
            if parts[0] != "alae":
                continue
            for i in range(1, len(parts) + 1):
                path = _module_file(".".join(parts[:i]))
                if path is not None and path not in seen:
                    seen.add(path)
                    todo.append(path)
    return seen


def test_the_closure_follows_submodules_named_in_from_imports():
    closure = import_closure(ROOT / "stages" / "train.py")
    assert ROOT / "alae" / "__init__.py" in closure
    assert ROOT / "alae" / "train" / "run.py" in closure
    # reached only through `from alae.metrics.features import ...` inside a function
    assert ROOT / "alae" / "metrics" / "features.py" in closure


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_depends_on_every_module_it_imports_and_on_no_other_file(stage):
    deps = stage_code_deps(ROOT)[stage]
    assert f"stages/{stage}.py" in deps
    covered = {path for dep in deps for path in files_of(ROOT / dep)}
    closure = import_closure(ROOT / "stages" / f"{stage}.py")
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure - covered)
    assert not missing, f"{stage}: dvc.yaml deps miss {missing}"
    for dep in deps:  # a stale dep reruns the stage for nothing
        if dep.startswith("alae/"):
            assert set(files_of(ROOT / dep)) & closure, f"{stage}: {dep} is not imported"


def test_the_run_key_hashes_exactly_the_stages_code_deps_and_dvc_yaml():
    declared = {ROOT / "dvc.yaml", *(path for deps in stage_code_deps(ROOT).values()
                                     for dep in deps for path in files_of(ROOT / dep))}
    assert set(code_files(ROOT)) == declared
    assert ROOT / "alae" / "cli.py" not in declared  # the `alae` command reruns no stage
    assert not any("__pycache__" in p.parts or p.suffix == ".pyc" for p in declared)


def test_the_run_key_changes_with_a_code_dep_and_not_with_other_code(tmp_path):
    for name in ("dvc.yaml", "stages/shard.py", "alae/config.py", "alae/cli.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    (tmp_path / "alae" / "data").mkdir()
    (tmp_path / "alae" / "data" / "x.py").write_text("x = 1\n")
    params = parse_params({})
    key = run_key(params, tmp_path)
    (tmp_path / "alae" / "cli.py").write_text("# edited\n")
    assert run_key(params, tmp_path) == key
    (tmp_path / "alae" / "data" / "x.py").write_text("x = 2\n")  # inside a folder dep
    assert run_key(params, tmp_path) != key
