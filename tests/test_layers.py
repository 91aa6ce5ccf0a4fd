"""The layers contract (pyproject.toml's [tool.importlinter], docs/architecture.md "Layers").

Issue 23 item 5: the check `lint-imports` runs in .ci/run, run here in-process (well under a
second) so the default test run catches an import that breaks the layering. A seam, not a
user-visible bug: these tests check that the contracts hold, and that each has teeth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from importlinter import api  # noqa: F401  (configures import-linter's adapters)
from importlinter.application import use_cases
from importlinter.application.app_config import settings

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
CONTRACTS = ("layers", "acyclic", "model-engines", "core")  # the contracts' ids there


def _kept(*contracts: str) -> bool:
    """lint-imports' check (its report printed), without a cache written into the tree."""
    return use_cases.lint_imports(config_filename=str(PYPROJECT), limit_to_contracts=contracts,
                                  cache_dir=None)


class _GraphWithImport:
    """import-linter's graph builder, plus one import the package does not have."""

    def __init__(self, builder, importer: str, imported: str) -> None:
        self.builder, self.importer, self.imported = builder, importer, imported

    def build(self, **kwargs):
        graph = self.builder.build(**kwargs)
        graph.add_import(importer=self.importer, imported=self.imported, line_number=1,
                         line_contents=f"import {self.imported}")
        return graph


@contextlib.contextmanager
def _with_import(importer: str, imported: str) -> Iterator[None]:
    builder = settings.GRAPH_BUILDER
    settings.configure(GRAPH_BUILDER=_GraphWithImport(builder, importer, imported))
    try:
        yield
    finally:
        settings.configure(GRAPH_BUILDER=builder)


def test_item5_the_package_keeps_its_layers() -> None:
    assert _kept(), "an import breaks the layers: see the report above"


@pytest.mark.parametrize(
    ("importer", "imported", "broken"),
    [
        # a lower layer reaching up: an engine importing the command line
        ("animegan_cli.engines.base", "animegan_cli.cli.app", {"layers", "model-engines"}),
        ("animegan_cli.core.errors", "animegan_cli.media.formats", {"layers", "core"}),
        # two front ends, independent of each other
        ("animegan_cli.tools.tune", "animegan_cli.serve.app", {"layers"}),
        # a cycle inside one subpackage (app imports batcher)
        ("animegan_cli.serve.batcher", "animegan_cli.serve.app", {"acyclic"}),
    ],
)
def test_item5_an_import_against_the_layers_breaks_its_contract(
    importer: str, imported: str, broken: set[str]
) -> None:
    with _with_import(importer, imported):
        kept = {contract: _kept(contract) for contract in CONTRACTS}
    assert {contract for contract, ok in kept.items() if not ok} == broken
