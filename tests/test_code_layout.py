"""The package's shape: stage subpackages that import only downward, and function-local imports of our own
modules only where they defer Keras, each with its reason. Pure reads of the source."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "ensemble"
# lowest first: a stage may import its own subpackage and those before it, never one after
STAGES = ["store", "data", "nets", "job", "member", "run", "kaggle", "blend", "report"]
TOP = len(STAGES)  # cli, api, demo: above every stage
KERAS_MODULES = ("ensemble.member", "ensemble.nets.augment", "ensemble.nets.averaging", "ensemble.nets.losses",
                 "ensemble.nets.schedules")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def rank(module: str) -> int:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else TOP


def imported(path: Path, node: ast.ImportFrom) -> str | None:
    """The absolute module an import names, for imports of this package."""
    if node.level == 0:
        return node.module if node.module and node.module.split(".")[0] == "ensemble" else None
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def own_imports(path: Path):
    tree = ast.parse(path.read_text())
    local = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, ast.ImportFrom)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (target := imported(path, node)):
            yield node, target, id(node) in local


def test_every_stage_imports_only_itself_and_the_stages_below_it():
    upward = [f"{module_name(path)} imports {target}"
              for path in sorted(PACKAGE.rglob("*.py"))
              for _, target, _ in own_imports(path) if rank(target) > rank(module_name(path))]
    assert upward == []


def test_each_stage_is_a_subpackage_and_nothing_else_sits_at_the_top():
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(STAGES)
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "api.py", "cli.py", "demo.py"]


def test_function_local_imports_of_the_package_only_defer_keras_and_say_so():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().splitlines()
        for node, target, local in own_imports(path):
            if not local or (path.name == "__init__.py" and target == "ensemble.api"):
                continue  # `from ensemble import Job` loads the API on first use: a member process never needs it
            where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
            assert target.startswith(KERAS_MODULES), f"{where}: {target} loads no Keras; import it at the top"
            said = "#" in lines[node.lineno - 1] or lines[node.lineno - 2].strip().startswith("#")
            assert said, f"{where}: say why the import waits (it defers Keras)"
            found.append(where)
    assert found, "the check saw no local import at all: it would pass vacuously"
