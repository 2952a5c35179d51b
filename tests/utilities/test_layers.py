"""The package's layering: a stage of ``utilities`` imports from the top modules and from earlier stages only,
and nothing in ``nn`` or ``mantis`` imports ``utilities`` (read from the source with :mod:`ast`, no import run)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["raster", "data", "artifacts", "training", "inference"]  # the order of utilities/__init__.py
TOP = {"errors", "atomic", "progress", "cli"}


def imported_modules(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_the_stage_order_is_the_documented_one():
    doc = (ROOT / "utilities" / "__init__.py").read_text()
    positions = [doc.index(f":mod:`utilities.{stage}`") for stage in STAGES]
    assert positions == sorted(positions)
    assert sorted(p.name for p in (ROOT / "utilities").iterdir() if p.is_dir() and p.name != "__pycache__") \
        == sorted(STAGES)


def test_no_stage_imports_a_later_stage():
    wrong = []
    for index, stage in enumerate(STAGES):
        allowed = set(STAGES[:index + 1]) | TOP
        for path in sorted((ROOT / "utilities" / stage).glob("*.py")):
            for module in imported_modules(path):
                parts = module.split(".")
                if parts[0] == "utilities" and len(parts) > 1 and parts[1] not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {module}")
    assert wrong == []


def test_top_modules_import_no_training_or_inference_stage():
    wrong = [f"{name}.py imports {module}" for name in sorted(TOP)
             for module in imported_modules(ROOT / "utilities" / f"{name}.py")
             if module.split(".")[:2] in (["utilities", "training"], ["utilities", "artifacts"],
                                          ["utilities", "inference"])]
    assert wrong == []


def test_models_and_blocks_import_nothing_of_utilities():
    wrong = [f"{path.relative_to(ROOT)} imports {module}" for package in ("nn", "mantis")
             for path in sorted((ROOT / package).rglob("*.py"))
             for module in imported_modules(path) if module.split(".")[0] == "utilities"]
    assert wrong == []
