"""Device protocols (sans-IO, one module per device kind) and the transport that keeps a device connected.

``barcode``, ``magstripe``, ``pinpad`` and ``pricechecker`` turn bytes into typed events (``events``) and
commands into bytes, for both the host and the device side; ``transport.DeviceDriver`` opens a device
URL, reconnects with backoff and runs a protocol over it. See docs/devices.md.
"""
