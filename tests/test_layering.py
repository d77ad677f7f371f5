"""Calls go down the layers, never back up (docs/architecture.md): checked on every module's imports."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "selectscale"
# layer of each top-level part; a module may import only its own layer or lower ones
LAYERS = {"paths": 0, "errors": 0, "drop": 1, "models": 1, "data": 1, "runs": 2, "loggers": 2, "engine": 2, "report": 3,
          "figures": 3, "runqueue": 3, "failures": 4, "argv_checks": 4, "experiments": 4, "evaluate": 4, "train": 5}
# Within layer 2 the loggers sit below the engine: the engine builds them, they import nothing of it (checked below).
BELOW = {"loggers": ("engine",)}


def part_of(module: str) -> str:
    return module.split(".")[1] if module.startswith("selectscale.") else ""


def imported_modules(path: Path) -> set[str]:
    name = "selectscale." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package ("__init__" counts as the file)
                base = name.split(".")[: -node.level]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {module for module in found if module.startswith("selectscale.")}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if part_of("selectscale." + p.relative_to(PACKAGE).parts[0]
                                                             .removesuffix(".py")) in LAYERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_down_the_layers(path):
    own = part_of("selectscale." + path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
    upward = [m for m in imported_modules(path) if part_of(m) in LAYERS and LAYERS[part_of(m)] > LAYERS[own]]
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports {upward} from a higher layer"


@pytest.mark.parametrize("path", [p for p in MODULES if p.relative_to(PACKAGE).parts[0] in BELOW],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_loggers_import_nothing_of_the_engine(path):
    own = path.relative_to(PACKAGE).parts[0]
    upward = [m for m in imported_modules(path) if part_of(m) in BELOW[own]]
    assert not upward, f"{path.relative_to(PACKAGE)} ({own}) imports {upward}, which is above it"


def test_every_part_of_the_package_has_a_layer():
    parts = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert parts - {"__init__"} <= set(LAYERS), sorted(parts - {"__init__"} - set(LAYERS))


def test_train_py_starts_without_torchvision():
    """torchvision takes about 4 s to import on a 2-core CPU (it loads torch._dynamo): train.py, its config
    checks and failure report, the CIFAR-shaped data and models must not import it; ImageNet, ResNet-50 and
    the CIFAR file lists (read on first use) do, and give the same objects as before."""
    code = ("import sys, selectscale.train, selectscale.data as data, selectscale.models as models\n"
            "assert 'torchvision' not in sys.modules, 'imported at start'\n"
            "models.create_model('resnet20', 10); data.build_dataset('synthetic', num_train=8, num_test=8)\n"
            "assert 'torchvision' not in sys.modules, 'imported by a CIFAR model or synthetic data'\n"
            "from selectscale.data import cifar\n"
            "assert data.CIFAR_SPECS is cifar.CIFAR_SPECS is cifar.cifar_specs() and 'torchvision' in sys.modules\n"
            "assert cifar.OFFICIAL_MD5['cifar-10-batches-py/batches.meta'] == '5ff9c542aee3614f3951f8cda6e48888'\n"
            "assert type(models.create_model('resnet50', 10)).__name__ == 'DropResNet'\n"
            "assert data.imagenet_val_transform is __import__('selectscale.data.imagenet').data.imagenet"
            ".imagenet_val_transform\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


RUN_FILE_NAMES = {"config.yaml", "result.json", "metrics.jsonl", "train.log", ".lock", "checkpoint.pt",
                  "checkpoint.prev.pt", ".checkpoint.staged.pt", "checkpoint.pt.sha256", "checkpoint.prev.pt.sha256",
                  "checkpoint.best.pt"}
OPENERS = {"open", "read_text", "read_bytes", "write_text", "write_bytes", "load", "save"}  # also torch.load/save


@pytest.mark.parametrize("path", [p for p in MODULES if "runs" not in p.relative_to(PACKAGE).parts[:1]],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_runs_package_names_or_opens_a_run_directorys_files(path):
    """Issue 32: selectscale/runs/ is the only code that reads or writes a run directory's files. Outside it no
    module spells a run file's name, and a module that takes a name from runs.layout never opens a file itself
    (open, read_text, write_text, torch.load, ...): it asks the runs package."""
    tree = ast.parse(path.read_text())
    named = sorted({node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                    and isinstance(node.value, str) and node.value in RUN_FILE_NAMES})
    assert not named, f"{path.relative_to(PACKAGE)} names run files {named}: use selectscale.runs"
    layout_names = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("selectscale.runs.layout") for alias in node.names}
    opened = sorted({ast.unparse(node) for node in ast.walk(tree) if isinstance(node, ast.Call)
                     and (node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", ""))
                     in OPENERS and layout_names & {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}})
    assert not opened, f"{path.relative_to(PACKAGE)} opens run files itself: {opened}; ask selectscale.runs"


def test_the_report_loads_no_network_or_training_loop():
    """engine/__init__ imports lazily: rendering tables must not import the models or the training loop."""
    code = ("import sys, selectscale.report, selectscale.report.plan, selectscale.report.table_files\n"
            "bad = [m for m in ('selectscale.models', 'selectscale.engine.trainer', 'selectscale.drop') "
            "if m in sys.modules]\nassert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
