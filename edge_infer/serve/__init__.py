"""``edge-infer serve`` on Starlette + uvicorn: the ``serve`` extra (``pip install "edge-infer[serve]"``).

``create_app(classifier)`` is the ASGI app, to run with uvicorn or to mount in another
Starlette/FastAPI service; ``serve(model_path)`` is the command's whole run. ``guard`` holds the
Host/Origin allow-list and body limits that the clean page (``python -m train clean``) shares.
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BYTES, DEFAULT_TOP_K, EdgeInferApp, create_app
from .batching import BatchConfig
from .command import serve
from .run import ServerLimits

__all__ = ["create_app", "serve", "BatchConfig", "ServerLimits", "EdgeInferApp", "DEFAULT_TOP_K",
           "DEFAULT_MAX_BYTES"]
