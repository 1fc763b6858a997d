"""Benchmarking on the device (``genre bench``): a subpackage the serving path never imports.

- :mod:`.timing`: warm-up + repeat + percentiles, used by every benchmark;
- :mod:`.harness`: ``genre bench`` (profile/variant plans, child processes, aggregation, Markdown, PNG);
- :mod:`.machine`: what machine and software produced a number (git and matplotlib are optional);
- :mod:`.report`: JSON + Markdown (+ PNG) result writing.
"""
