"""Shared fixtures: a store directory and the example features repo."""

from pathlib import Path

import pytest

from featurecore.registry import RegistryState, load_definitions, validate

EXAMPLE_REPO = Path(__file__).resolve().parent.parent / "examples" / "recsys"


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    """An empty store directory (created on first open)."""
    return tmp_path / "store"


@pytest.fixture(scope="session")
def example_repo() -> Path:
    """The example YAML features repo (examples/recsys)."""
    return EXAMPLE_REPO


@pytest.fixture(scope="session")
def example_state(example_repo: Path) -> RegistryState:
    """The validated RegistryState of the example repo (revision 1, nothing stored)."""
    return validate(load_definitions(example_repo))
