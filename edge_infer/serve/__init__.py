"""``edge-infer serve`` on Starlette + uvicorn (the ``serve`` extra: ``pip install "edge-infer[serve]"``).

``guard`` holds the Host/Origin allow-list and body limits that the clean page shares.
"""
