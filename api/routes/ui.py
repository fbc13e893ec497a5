"""The dashboard at /ui: static HTML and vanilla JS (no build step), served by the API itself."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

UI = Path(__file__).resolve().parents[1] / "ui"
router = APIRouter(include_in_schema=False)


@router.get("/ui")
@router.get("/ui/")
def index() -> FileResponse:
    return FileResponse(UI / "index.html", media_type="text/html")
