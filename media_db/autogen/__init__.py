"""What `make revision` runs: Alembic's autogenerate output rewritten into lock-safe revisions.

- `rewriter`: the rewrite rules, one per kind of operation (class-level dispatch, as Alembic's
  `Rewriter`), and the entry point `rewrite`;
- `ops`: our custom operations and how they are rendered into a revision file;
- `locks`: what the revision says about itself: its `Locks:` lines, what each direction
  drops, the lint findings it makes on purpose;
- `transitions`: expand/contract (a rename, a NOT NULL column with a backfill, a volatile
  default, a rewriting type change): the models' markers, the sync triggers' SQL, the
  backfills and guarded drops, and the transitions in flight as the catalog holds them (read
  by verify, check and status too);
- `pg_types`: which PostgreSQL type changes rewrite the table;
- `storage_parameters`: an autogenerate plugin comparing per-table storage parameters (it also
  runs under `alembic check` and `make verify`).
"""
