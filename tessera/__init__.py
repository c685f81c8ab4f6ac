"""The ``tessera`` command line and demo; the product itself lives in core, central, edge, sync,
drivers and simulators."""
