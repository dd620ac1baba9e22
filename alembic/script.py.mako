<%!
    def body(rendered):
        # Alembic's "commands auto generated ... please adjust!" markers: the review happened.
        lines = [line for line in rendered.splitlines() if not line.strip().startswith("# ###")]
        return "\n".join(lines).strip()

    def docstring_line(message):
        # The message, as the docstring's first line, is text and never code: one line, with
        # backslashes, triple quotes and unprintable characters escaped (`make history` and
        # __doc__ read it back as given, its whitespace runs made single spaces).
        line = " ".join((message or "").split()).replace("\\", "\\\\")
        line = line.replace('"' * 3, '\\"' * 3)  # spelt so: Mako's indenter reads quotes
        return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in line)
%>\
"""${docstring_line(message)}

Why: <what this changes and why; a reviewer reads this before the SQL>.
% if context.get("locks"):
${context.get("locks")}
% else:
Locks: <for a populated table, how this avoids long locks; else "new objects only">.
% endif

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
${imports if imports else ""}
revision: str = ${repr(up_revision)}
down_revision: str | Sequence[str] | None = ${repr(down_revision)}
branch_labels: str | Sequence[str] | None = ${repr(branch_labels)}
depends_on: str | Sequence[str] | None = ${repr(depends_on)}
% if context.get("declarations"):
${context.get("declarations")}
% endif


def upgrade() -> None:
    ${body(upgrades) if upgrades else "pass"}


def downgrade() -> None:
    ${body(downgrades) if downgrades else "pass"}
