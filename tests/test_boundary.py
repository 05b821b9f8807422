"""The Hub boundary: files under modeling/ import only the allowed packages and each other (relatively)."""

import ast
from pathlib import Path

MODELING = Path(__file__).resolve().parents[1] / "modeling"
ALLOWED = {"torch", "torchvision", "timm", "scipy", "numpy", "PIL", "transformers",
           "__future__", "collections", "dataclasses", "math", "typing", "re", "warnings", "functools"}


def test_modeling_imports_only_allowed_packages():
    files = sorted(MODELING.rglob("*.py"))
    assert len(files) >= 5
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 1:
                    offenders.append(f"{path.name}: relative import outside its folder (level {node.level})")
                roots = [] if node.level == 1 else [node.module.split(".")[0]]
            else:
                continue
            offenders += [f"{path.relative_to(MODELING)}: imports {root}" for root in roots if root not in ALLOWED]
    assert offenders == []
