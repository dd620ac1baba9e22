"""What `make revision` runs: Alembic's autogenerate output rewritten into lock-safe revisions.

- `rewriter`: the walk over a revision's operations, the dispatch to each kind's rule, and what
  the file must declare; the entry point `rewrite`;
- `rules/`: one rule per kind of operation (`columns`, `constraints`, `entities`), registered
  as Alembic's `Rewriter.rewrites` registers them;
- `expand_contract`: the expands and contracts `make revision` writes (a rename, a NOT NULL
  column with a backfill, a volatile default, a rewriting type change), with beside them
  `carried` (a column's indexes, CHECKs and foreign keys built again over its new column),
  `keys` (a one-column primary key and the foreign keys referencing it) and `guards` (what a
  drop without consent checks under its lock);
- `ops`: our custom operations and how they are rendered into a revision file;
- `locks`: what the revision says about itself: its `Locks:` lines, what each direction
  drops, the lint findings it makes on purpose;
- `pg_types`: which PostgreSQL type changes rewrite the table, and which come back by a cast.

What a deploy reads at run time lives below both: the transitions in flight
(media_db/transitions.py), what depends on a column (media_db/dependents.py), and the storage
parameters' comparator (media_db/deploy/storage_parameters.py). An upgrade loads nothing here.
"""
