"""Where a duration setting takes 0 for off, 0s, 0ms and 0min are off as well: a user who
writes every duration with its unit is not refused for it (media_db/deploy/durations.py)."""

import pytest
from alembic.util import CommandError

from media_db.deploy import options

OFF_ABLE = [name for name, option in options.OPTIONS.items() if option.zero_is_off]


@pytest.mark.parametrize("name", OFF_ABLE)
@pytest.mark.parametrize("zero", ["0s", "0ms", "0min", "0d"])
def test_a_zero_with_a_unit_is_off_like_a_bare_zero(name: str, zero: str) -> None:
    assert options.options({name: zero}, environ={}) == options.options({name: "0"}, environ={})


def test_a_zero_is_still_refused_where_zero_means_no_limit() -> None:
    # A timeout's 0 would mean "wait forever": refused whatever its unit.
    for zero in ("0", "0s", "0ms"):
        with pytest.raises(CommandError, match="lock-timeout='0"):
            options.timeout_settings({"lock-timeout": zero}, environ={})
