"""All API settings in one place, read from COMPOSER_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPOSER_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str | None = None  # default: SQLite in data_dir
    broker_url: str | None = None  # default: the embedded SQLAlchemy transport in data_dir
    blob_url: str | None = None  # default: file://data_dir/blobs
    blob_dir: str | None = None
    bootstrap_key: str | None = None  # creates an admin key with this value if none exists
    max_upload_mb: float = Field(50.0, gt=0)
    max_archive_mb: float = Field(200.0, gt=0)  # uncompressed size cap for imported archives
    register_packaged_encoder: bool = True
    serving_cache_mb: float = Field(512.0, gt=0)
    sse_poll_seconds: float = Field(0.5, gt=0)
    device: str | None = None
    batch_max_rows: int = Field(32, ge=1)
    batch_max_wait_ms: float = Field(5.0, ge=0)
    queue_max_rows: int = Field(512, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
