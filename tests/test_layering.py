"""Product apps hold only product code: none of them imports the stand-ins in `fakes/`.

Parsed with `ast` rather than grepped, so a docstring that names the fake is fine and
`import fakes.stripe`, `from fakes import registry` or `from fakes.stripe.server import X`
anywhere in a module (also inside a function) is not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_PACKAGES = (
    "registry_sync",
    "marketplace",
    "billing",
    "gateway",
    "oauth",
    "web",
    "common",
    "config",
)
FORBIDDEN = "fakes"


def imports_of(source: str) -> list[tuple[int, str]]:
    """Every module an `import` or `from ... import` statement names, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def fake_imports(source: str) -> list[tuple[int, str]]:
    return [
        (line, name)
        for line, name in imports_of(source)
        if name == FORBIDDEN or name.startswith(FORBIDDEN + ".")
    ]


def test_no_product_module_imports_a_fake() -> None:
    offenders: list[str] = []
    checked = 0
    for package in PRODUCT_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            checked += 1
            for line, name in fake_imports(path.read_text()):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert checked > 100  # the walk really saw the product's modules
    assert not offenders, "product code imports a fake:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        "import fakes",
        "import fakes.stripe.server as s",
        "from fakes import registry",
        "from fakes.stripe.server import FakeStripeServer",
        "def f():\n    from fakes.registry import FakeRegistry\n",
    ],
)
def test_the_check_catches_each_spelling(source: str) -> None:
    assert fake_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        '"""Uses fakes.stripe in tests."""',
        "import fakes_of_mine",
        "from billing import fake_things",
        "from . import fakes",  # a relative module that happens to be called fakes
    ],
)
def test_the_check_leaves_lookalikes_alone(source: str) -> None:
    assert not fake_imports(source)
