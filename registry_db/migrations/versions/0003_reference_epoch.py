"""The reference epoch: one serial that registrations, archives and alias moves increment, so API processes
know when what they remember of adapter references is out of date

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 12:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    table = op.create_table(
        "reference_epoch",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("serial", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_epoch")),
    )
    op.bulk_insert(table, [{"id": 1, "serial": 0}])


def downgrade() -> None:
    op.drop_table("reference_epoch")
