"""One settings module resolves where the registry lives; the registry's library takes those URLs."""

from __future__ import annotations

from service.settings import Settings, open_registry, registry_urls


def test_the_registry_defaults_to_the_data_directory_and_explicit_urls_win(tmp_path):
    db, blobs = registry_urls(Settings(data_dir=tmp_path))
    assert db == f"sqlite:///{tmp_path.resolve() / 'registry.db'}"
    assert blobs == f"file://{tmp_path.resolve() / 'blobs'}"
    assert registry_urls(Settings(data_dir=tmp_path, blob_dir=str(tmp_path / "b")))[1] == f"file://{tmp_path / 'b'}"
    given = Settings(data_dir=tmp_path, database_url="sqlite:///:memory:", blob_url="db://")
    assert registry_urls(given) == ("sqlite:///:memory:", "db://")
    reg = open_registry(Settings(data_dir=tmp_path))
    try:
        assert reg.blobs.describe() == blobs and str(reg.engine.url) == db
    finally:
        reg.close()
