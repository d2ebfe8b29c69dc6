"""Entropic OS benchmarks: ``python -m benchmarks [--quick] [NAME ...]`` (or ``make bench``).

Each benchmark prints human-readable progress lines and then exactly one final line: a JSON
object of figures whose ``benchmark`` field names it. Targets are reported, never asserted:
a missed target does not make the run fail.

- ``protocol_rtt``: round trip of a ~1 KB command, ours vs. raw pyzmq and jupyter_client.
- ``image_save``: image save of four personas x 10,000 interactions vs. pickle + fsync, and
  request latency while the backend saves.
- ``swaps``: 1,000 atomic swaps while four clients keep invoking the swapped method.
"""
