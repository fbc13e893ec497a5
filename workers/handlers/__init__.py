"""Job handlers, one module per job type. Each turns a JobContext into a Finish."""

from __future__ import annotations

from workers.handlers import adapter, evaluate

HANDLERS = {"adapter": adapter.handle, "evaluate": evaluate.handle}
