"""All settings of the service (API and workers), read from COMPOSER_* environment variables: one place,
typed, validated at start-up. The registry reads its own URLs (COMPOSER_DATABASE_URL, COMPOSER_BLOB_URL)
from the same variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COMPOSER_", extra="ignore")

    data_dir: Path = Path("data")
    # Redis in production; the embedded default needs no server (kombu's SQLAlchemy transport).
    broker_url: str | None = None
    database_url: str | None = None
    blob_url: str | None = None
    blob_dir: str | None = None
    soft_time_limit: int = Field(6 * 3600, gt=0)
    time_limit: int = Field(6 * 3600 + 300, gt=0)
    # Redis redelivers an unacknowledged task after this long, even while it runs (celery#5935):
    # keep it above the hard time limit. A duplicate that arrives anyway backs off (see docs/operations.md).
    visibility_timeout: int | None = None
    heartbeat_interval: float = Field(5.0, gt=0)
    stale_after: float = Field(60.0, gt=0)
    reconcile_interval: float = Field(30.0, gt=0)
    requeue_queued_after: float = Field(300.0, gt=0)
    checkpoint_every_steps: int = Field(50, ge=0)
    checkpoints_kept_while_running: int = Field(1, ge=1)  # the newest N (each also holds the best-so-far state)
    checkpoints_kept_after: int = Field(1, ge=0)  # when the job ends (its page shows it); 0 leaves all to the GC
    progress_every_seconds: float = Field(1.0, ge=0)
    max_attempts: int = Field(3, ge=1)
    device: str | None = None  # default: cuda when visible (CUDA_VISIBLE_DEVICES), else cpu
    # the bases' serving precision: "int8" runs their linear projections as int8 matmuls on the CPU
    # (composer/quantize.py); modules are the same files at both, and a base keeps its identity
    serving_precision: Literal["fp32", "int8"] = "fp32"
    # the forwards that give rankings their features: "auto" is bfloat16 where the hardware runs it natively
    rank_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    # -- the API --------------------------------------------------------------------------------
    bootstrap_key: str | None = None  # creates an admin key with this value if none exists
    max_upload_mb: float = Field(50.0, gt=0)
    max_archive_mb: float = Field(200.0, gt=0)  # uncompressed size cap for imported archives
    register_packaged_encoder: bool = True
    serving_cache_mb: float = Field(512.0, gt=0)  # modules attached to a resident base
    serving_host_cache_mb: float | None = Field(None, ge=0)  # their artifacts in host memory; default 4x the above
    # at start-up, build ready ST-As, MT-As and LoRAs (newest first) into the host tier until it is full, so
    # their first requests reattach instead of fetching and building
    serving_prefetch: bool = False
    metrics_top_adapters: int = Field(100, ge=1, le=10000)  # adapters with their own label on /metrics
    auth_cache_seconds: float = Field(1.0, ge=0)  # a valid key is trusted this long per API process; 0: never
    # an API process remembers what adapter references (id, name:version, task@alias) resolved to, so a warm
    # /v1/predict reads no table, and checks the registry's reference epoch this often: an archive or alias
    # move through this process applies at once, through another within this time; 0: read every request
    adapter_cache_seconds: float = Field(1.0, ge=0)
    sse_poll_seconds: float = Field(0.5, gt=0)
    batch_max_rows: int = Field(32, ge=1)
    batch_max_wait_ms: float = Field(5.0, ge=0)
    queue_max_rows: int = Field(512, ge=1)
    request_timeout_s: float = Field(30.0, gt=0)
    predict_rate_per_key: float = Field(50.0, ge=0)  # predict calls per second per API key; 0 turns it off
    predict_burst_per_key: int = Field(100, ge=1)
    max_active_jobs_per_owner: int = Field(50, ge=0)  # queued + running; 0 turns it off

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError("soft_time_limit must be below time_limit")
        if self.visibility_timeout is None:
            self.visibility_timeout = self.time_limit + 3600
        elif self.visibility_timeout <= self.time_limit:
            raise ValueError("visibility_timeout must exceed time_limit, or Redis redelivers running jobs")
        if self.heartbeat_interval * 2 > self.stale_after:
            raise ValueError("stale_after must be at least twice heartbeat_interval")
        return self

    @property
    def broker(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @property
    def broker_transport_options(self) -> dict[str, object]:
        opts: dict[str, object] = {}
        if self.broker.startswith(("redis://", "rediss://", "sqs://")):
            opts["visibility_timeout"] = self.visibility_timeout
        if self.broker.startswith("filesystem://"):
            folder = self.data_dir.resolve() / "broker"
            folder.mkdir(parents=True, exist_ok=True)
            opts.update(data_folder_in=str(folder), data_folder_out=str(folder))
        return opts


def registry_urls(settings: Settings) -> tuple[str, str]:
    """The registry's database and blob store: the given URLs, else SQLite and blobs in the data directory
    (`blob_dir` names another directory for them)."""
    from registry_db.engine import sqlite_url

    blobs = settings.blob_url or f"file://{Path(settings.blob_dir or settings.data_dir / 'blobs').resolve()}"
    return settings.database_url or sqlite_url(settings.data_dir), blobs


def open_registry(settings: Settings):  # type: ignore[no-untyped-def]
    from registry_db.registry import Registry

    return Registry.open(*registry_urls(settings))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    s = Settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    return s
