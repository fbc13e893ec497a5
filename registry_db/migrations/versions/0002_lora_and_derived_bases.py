"""LoRA adapters, and derived base models (a base fine-tuned by a multi-task job)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 23:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt')"
NEW_KINDS = "kind IN ('st_a', 'mt_a', 'fusion', 'soft_prompt', 'lora')"


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), NEW_KINDS)
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("job_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("owner_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("weights_sha256", sa.String(length=64), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_base_models_parent_id_base_models"), "base_models", ["parent_id"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_base_models_job_id_jobs"), "jobs", ["job_id"], ["id"], ondelete="SET NULL"
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_base_models_owner_id_owners"), "owners", ["owner_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("base_models", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_base_models_owner_id_owners"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_base_models_job_id_jobs"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("fk_base_models_parent_id_base_models"), type_="foreignkey")
        batch_op.drop_column("weights_sha256")
        batch_op.drop_column("owner_id")
        batch_op.drop_column("job_id")
        batch_op.drop_column("parent_id")
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_adapters_kind"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_adapters_kind"), OLD_KINDS)
