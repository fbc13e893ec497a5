"""Saved compositions: a tree of registered modules kept as a module of its own (kind `composition`)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt', 'lora')"
NEW_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt', 'lora', 'composition')"


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), NEW_KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM adapters WHERE kind = 'composition'")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), OLD_KINDS)
