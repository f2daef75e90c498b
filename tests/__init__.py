"""The tests, in three lanes: ``unit`` (in-process, the whole lane in seconds: ``make
unit``), ``e2e`` (real processes and sockets: gunicorn, upstreams, nginx) and ``browser``
(a real headless Chromium). ``helpers`` holds what the lanes share; ``make test`` runs
them all."""
