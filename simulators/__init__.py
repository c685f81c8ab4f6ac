"""Simulated devices and tills: the device side of the ``drivers`` protocols over pseudo-terminals and
sockets (``ports``, ``devices``), and a till's POS on the edge's API (``till``); ``tessera sim`` runs them.
"""
