"""`make bench`: the data layer against raw psycopg, measured in the same run."""
