"""What revisions that landed before a declaration existed would declare about themselves.

A revision declares its own facts in its file: `backfills` (what rows a batched backfill has
left, for progress), `lint_waivers` (squawk rules it breaks on purpose, and why), `drops_*`
(what each direction drops, for the data-loss guard). These revisions were written before that
declaration existed, and a landed revision is never edited (its checksum is in every deployed
database's history), so their declarations live here, the one place tools read besides the file.
"""

# {revision: {table: SQL condition of a row still to backfill}}
BACKFILLS = {
    "0003": {"analysis_results": "status IS NULL", "processing_jobs": "status IS NULL"},
    "0008": {"processing_jobs": "priority IS NULL"},
}

# A downgrade removes what its upgrade added; dropping is its job.
_DOWNGRADE = {
    "ban-drop-table": "a downgrade drops the tables its upgrade created",
    "ban-drop-constraint": "a downgrade drops the constraints its upgrade added",
    "ban-drop-function": "a downgrade drops the function its upgrade created",
    "ban-drop-not-null": "0005's downgrade undoes its SET NOT NULL",
}
# {"<revision>_<direction>": {squawk rule: why it is waived}}
LINT_WAIVERS: dict[str, dict[str, str]] = {
    **{f"{n:04d}_downgrade": _DOWNGRADE for n in range(1, 8)},
    "0005_upgrade": {
        "adding-not-nullable-field": "no scan: a CHECK (status IS NOT NULL) validated in 0004 "
        "proves the column, which squawk cannot see across revisions",
        "ban-drop-constraint": "drops 0002's helper CHECK, redundant once the column is NOT NULL",
    },
}
