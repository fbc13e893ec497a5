"""Each module's stored bytes (its weights and config blobs), beside its trainable parameters

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 22:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stored_bytes", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE adapters SET stored_bytes = "
        "COALESCE((SELECT size FROM blob_objects WHERE blob_objects.sha256 = adapters.blob_sha256), 0) + "
        "COALESCE((SELECT size FROM blob_objects WHERE blob_objects.sha256 = adapters.config_sha256), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("adapters", schema=None) as batch_op:
        batch_op.drop_column("stored_bytes")
