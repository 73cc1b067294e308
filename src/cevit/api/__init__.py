"""cevit's HTTP service (``cevit serve``): a JSON API and a small web page, built on FastAPI.

>>> from cevit.api import create_app
>>> app = create_app(weights="model.safetensors")      # the model is loaded once, at start-up
>>> # serve it with any ASGI server, e.g. uvicorn.run(app, host="127.0.0.1", port=8000)

Needs the ``api`` extra (FastAPI, uvicorn, python-multipart). The library never imports this package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["create_app", "JsonLogFormatter", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_QUEUE_SIZE"]


def __getattr__(name: str) -> Any:  # lazy: importing cevit.api does not import FastAPI
    if name in __all__:
        value = getattr(importlib.import_module("cevit.api.app"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cevit.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
