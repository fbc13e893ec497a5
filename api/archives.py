"""Safe archive handling for imports and downloads: no pickles, no symlinks, no path tricks, size caps."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import PurePosixPath

from api.errors import Problem
from composer.kinds import KINDS

PICKLE_NAMES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# the only pickles let through to the importers: those a kind reads with torch.load(weights_only=True) (an
# AdapterHub prefix); the importer still refuses them for any other kind
WEIGHTS_ONLY = frozenset(n for kind in KINDS.values() for n in kind.weights_only_pickles)


def read_zip(data: bytes, max_uncompressed: int) -> dict[str, bytes]:
    """The archive's regular files by their path inside it (posix, no leading "./"). Refuses symlinks,
    absolute or `..` paths, pickles and zip bombs. `composer.kinds.plan_archive` reads the layout."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise Problem(422, "invalid-archive", "the upload is not a zip archive", field="file") from None
    total, files = 0, {}
    for info in zf.infolist():
        path = PurePosixPath(info.filename)
        if info.filename.startswith(("/", "\\")) or ".." in path.parts or ":" in info.filename:
            raise Problem(422, "invalid-archive", f"unsafe path in archive: {info.filename!r}", field="file")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise Problem(422, "invalid-archive", f"symlinks are refused: {info.filename!r}", field="file")
        if info.is_dir():
            continue
        total += info.file_size
        if total > max_uncompressed:
            raise Problem(413, "archive-too-large", f"the archive unpacks to more than {max_uncompressed} bytes")
        name = path.name
        if name.endswith(PICKLE_NAMES) and name not in WEIGHTS_ONLY:
            raise Problem(422, "pickle-refused", f"{name} is a pickle; only safetensors are accepted", field="file")
        if name.startswith(".") or "__MACOSX" in path.parts:
            continue  # macOS and editor litter, never a module file
        files[path.as_posix()] = zf.read(info)
    return files


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()
