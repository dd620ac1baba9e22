"""What a deploy runs: alembic/env.py's helpers (environment, options, lock, retries, data_loss,
failures, history, progress, backup) and the operator's commands (status, verify, adopt, check,
`python -m media_db.deploy.backup restore`). Never imports media_db.dev or the revision writer."""
