"""`make bench`: the data layer against raw psycopg, measured in the same run."""

ROUNDS = 5  # interleaved rounds behind every ratio: its median, with the spread
