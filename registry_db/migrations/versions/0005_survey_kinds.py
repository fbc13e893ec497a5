"""The PEFT surveys' methods as kinds: (IA)³, BitFit, Compacter, AdaLoRA, diff pruning, prefix tuning, P-tuning

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 20:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt', 'lora', 'composition')"
NEW_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt', 'lora', 'composition', 'ia3', 'bitfit', 'compacter', 'adalora', 'diff', 'prefix', 'p_tuning')"
ADDED = ("ia3", "bitfit", "compacter", "adalora", "diff", "prefix", "p_tuning")


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), NEW_KINDS)


def downgrade() -> None:
    kinds = ", ".join(f"'{k}'" for k in ADDED)
    op.execute(f"DELETE FROM adapters WHERE kind IN ({kinds})")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), OLD_KINDS)
