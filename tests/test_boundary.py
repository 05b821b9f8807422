"""The Hub boundary: files under modeling/ import only the allowed packages (and the standard library) and each other
by same-folder relative imports, which is what the remote-code copy follows."""

import ast
import sys
from pathlib import Path

MODELING = Path(__file__).resolve().parents[1] / "modeling"
# The design's list, plus the standard library (present wherever Python is).
ALLOWED = {"torch", "torchvision", "timm", "scipy", "numpy", "PIL", "transformers"} | set(sys.stdlib_module_names)


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


def test_relative_imports_name_a_module_of_the_same_folder():
    """transformers' remote-code loader copies a file's `from .module import ...` targets from the same folder only;
    `from . import module` is not followed, so the Hub copy would miss that file."""
    problems = []
    for path in sorted(MODELING.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if not node.module:
                    problems.append(f"{path.relative_to(MODELING)}: 'from . import' is not followed by remote code")
                elif not (path.parent / f"{node.module.split('.')[0]}.py").is_file():
                    problems.append(f"{path.relative_to(MODELING)}: .{node.module} is not a file of its folder")
    assert problems == []


def test_remote_code_copy_follows_relative_imports_and_symlinked_shared_files(tmp_path, monkeypatch):
    """A helper shared by two model folders can live once and be linked into the other folder: the copy for the Hub
    writes its content as a plain file next to the importing module."""
    from detrvilt.hub import copy_remote_code

    (tmp_path / "pkg_a").mkdir()
    (tmp_path / "pkg_b").mkdir()
    (tmp_path / "pkg_a" / "__init__.py").write_text("")
    (tmp_path / "pkg_b" / "__init__.py").write_text("")
    (tmp_path / "pkg_b" / "shared_io.py").write_text("def decode(x):\n    return x\n")
    (tmp_path / "pkg_a" / "shared_io.py").symlink_to(tmp_path / "pkg_b" / "shared_io.py")
    (tmp_path / "pkg_a" / "helpers.py").write_text("from .shared_io import decode\n")
    (tmp_path / "pkg_a" / "processing.py").write_text("from .helpers import decode\n\n\nclass Thing:\n    pass\n")
    (tmp_path / "pkg_a" / "unused.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    module = importlib.import_module("pkg_a.processing")
    out = tmp_path / "out"
    out.mkdir()
    assert copy_remote_code([module.Thing], out) == ["helpers.py", "processing.py", "shared_io.py"]
    assert not (out / "shared_io.py").is_symlink()
    assert (out / "shared_io.py").read_text() == "def decode(x):\n    return x\n"


PACKAGE = Path(__file__).resolve().parents[1] / "src" / "detrvilt"


def _package_imports() -> tuple[dict[str, set[str]], set[str]]:
    """Every module of src/detrvilt and the package modules it imports (at module level or inside functions), and
    the names that are packages (`__init__.py`)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("detrvilt",) + path.relative_to(PACKAGE).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                targets |= {f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target
                            for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph, {name for name, path in modules.items() if path.name == "__init__.py"}


def test_no_import_circle_between_the_packages_modules():
    """Modules import each other in one direction only (a package's `__init__` re-exporting its modules aside)."""
    graph, packages = _package_imports()
    assert len(graph) > 40 and "detrvilt.training.detr" in packages
    circles, state = [], {}

    def visit(name, trail):
        state[name] = "open"
        for target in sorted(graph[name] - packages):
            if state.get(target) == "open":
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_the_library_never_imports_scripts_or_benchmarks():
    graph, _ = _package_imports()
    text = "\n".join(path.read_text() for path in PACKAGE.rglob("*.py"))
    assert "import scripts" not in text and "import benchmarks" not in text and "from benchmarks" not in text
    assert all(not t.startswith(("scripts", "benchmarks")) for targets in graph.values() for t in targets)
