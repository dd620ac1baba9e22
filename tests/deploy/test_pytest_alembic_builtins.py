"""pytest-alembic's built-in checks, on a fresh real PostgreSQL database each."""

import pytest
from pytest_alembic.tests import (
    test_model_definitions_match_ddl,
    test_single_head_revision,
    test_up_down_consistency,
    test_upgrade,
)

# make test-matrix runs these on every PostgreSQL major.
pytestmark = pytest.mark.matrix

__all__ = [
    "test_model_definitions_match_ddl",
    "test_single_head_revision",
    "test_up_down_consistency",
    "test_upgrade",
]
