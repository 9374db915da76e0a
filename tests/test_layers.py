"""The import contract: docs/architecture.md's layer order, checked on every module's imports.

A lower layer never imports a higher one. Every import counts: at the top of a module,
inside a function (a lazy import is still a dependency) and under TYPE_CHECKING. Run by
the test suite and by `make lint` (`python -m tests.test_layers`, no Django needed)."""

from __future__ import annotations

import ast
import sys
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("accounts", "aivc_portal", "bookings", "containers", "jobs", "cli")

# Layer number, name, and the module patterns it holds (dotted names, fnmatch). The first
# pattern that matches a module decides its layer, so the specific rows come first; a
# module no pattern matches fails the contract until it is placed.
LAYERS: tuple[tuple[int, str, tuple[str, ...]], ...] = (
    (
        6,
        "entry points",
        (
            "*.views",
            "*.*_views",
            "*.forms",
            "*.admin",
            "*.api",
            "*.api_schema",
            "*.serializers",
            "*.urls",
            "*.*_urls",
            "*.tasks",
            "*.management",
            "*.management.*",
            "*.templatetags",
            "*.templatetags.*",
            "*.apps",
            "*.signals",
            "*.context_processors",
            "*.middleware",
            "accounts.authentication",
            "accounts.throttling",
            "aivc_portal.admin_actions",
            "aivc_portal.admin_site",
            "aivc_portal.health",
            "aivc_portal.metrics",
            "aivc_portal.wsgi",
            "bookings.legacy_import",
            "bookings.legacy_import.*",
            "cli",
            "cli.*",
        ),
    ),
    (
        0,
        "helpers without rules (settings, task names, pure parsers)",
        (
            "accounts",
            "bookings",
            "containers",
            "containers.telemetry",
            "jobs",
            "aivc_portal",
            "aivc_portal.env",
            "aivc_portal.envfile",
            "aivc_portal.settings",
            "aivc_portal.directory_settings",
            "aivc_portal.clusters",
            "aivc_portal.logs",
            "aivc_portal.log_filters",
            "aivc_portal.model_updates",
            "aivc_portal.task_names",
            "aivc_portal.scheduler",
            "accounts.sshkeys",
            "accounts.validators",
            "bookings.timeslots",
            "containers.commands",
            "containers.failures",
            "containers.gpus",
            "containers.locks",
            "containers.telemetry.processes",
            "jobs.uploads",
        ),
    ),
    (
        1,
        "inventory",
        (
            "containers.models",
            "containers.inventory_selectors",
            "containers.inventory_services",
        ),
    ),
    (2, "accounts", ("accounts.*",)),
    (3, "bookings", ("bookings.*",)),
    (4, "jobs", ("jobs.*",)),
    (5, "lifecycle and telemetry", ("containers.*",)),
)

# Imports allowed against the order, each with its reason. Empty: keep it so.
EXCEPTIONS: dict[tuple[str, str], str] = {}


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "migrations" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    for number, _name, patterns in LAYERS:
        if any(fnmatchcase(module, pattern) for pattern in patterns):
            return number
    return None


def _project_module(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `name` is or lies in (`x.y.z` -> `x.y`)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `module` imports, anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            # `from a import b` imports the module a.b when there is one, else a's name b.
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _project_module(name, modules)
            if target and target != module:
                found.add(target)
    return found


def violations() -> tuple[list[str], list[str], list[str]]:
    """(modules in no layer, upward imports not excepted, exceptions no longer needed)."""
    modules = project_modules()
    unplaced = sorted(m for m in modules if layer_of(m) is None)
    upward, used = [], set()
    for module, path in sorted(modules.items()):
        low = layer_of(module)
        for target in sorted(imports_of(module, path, modules)):
            high = layer_of(target)
            if low is None or high is None or high <= low:
                continue
            if (module, target) in EXCEPTIONS:
                used.add((module, target))
                continue
            upward.append(f"{module} (layer {low}) imports {target} (layer {high})")
    stale = sorted(f"{a} -> {b}" for a, b in set(EXCEPTIONS) - used)
    return unplaced, upward, stale


def test_every_module_has_a_layer():
    assert violations()[0] == []


def test_no_module_imports_a_higher_layer():
    assert violations()[1] == []


def test_every_exception_is_still_needed():
    assert violations()[2] == []


def test_the_contract_sees_a_lazy_upward_import(tmp_path):
    path = tmp_path / "capacity.py"
    path.write_text("def f():\n    from containers.lifecycle import reconcile\n")
    modules = {"bookings.capacity": path, "containers.lifecycle": path}
    assert imports_of("bookings.capacity", path, modules) == {"containers.lifecycle"}
    assert layer_of("bookings.capacity") < layer_of("containers.lifecycle")


def main() -> int:
    unplaced, upward, stale = violations()
    for title, lines in (
        ("modules in no layer (add them to tests/test_layers.py::LAYERS)", unplaced),
        ("imports of a higher layer (docs/architecture.md)", upward),
        ("exceptions no longer needed (remove them from EXCEPTIONS)", stale),
    ):
        if lines:
            print(f"{title}:", *lines, sep="\n  ")
    if unplaced or upward or stale:
        return 1
    print("layers: contract kept")
    return 0


if __name__ == "__main__":
    sys.exit(main())
