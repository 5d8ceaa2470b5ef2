"""Labeling-queue load test: many annotators against the real HTTP API.

    .venv/bin/python benchmarks/queue_load.py [--annotators 100] [--sizes 10000,1000000]
                                          [--duration 20] [--k 1] [--think-ms 0,10000]

What it does, end to end (see benchmarks/README.md for the method):

1. Starts its own embedded PostgreSQL + Redis under ``.data/bench`` (never the
   development or test data), with ``pg_stat_statements`` preloaded, and runs
   ``manage.py migrate``.
2. Creates the annotators (with API tokens) and one campaign per size, and
   bulk-loads the pending pairs in SQL (``INSERT ... SELECT`` over
   ``generate_series``), then VACUUM ANALYZE and a CHECKPOINT
   (``database_settle``). A dataset already loaded by an
   earlier run is reused; only the rows a run touched are reset.
3. Serves the product with ``gunicorn config.wsgi`` (gthread workers,
   persistent database connections through ``DJANGO_CONN_MAX_AGE``).
4. Runs, after a one-annotator baseline, N annotator threads, each on its
   own keep-alive HTTP connection, looping ``POST campaigns/<id>/next/``
   then ``POST leases/<id>/preference/`` (optionally after a "think"
   pause) for a warm-up and a measured window.
5. Prints labels/s, client-side and server-side latencies, statements per
   label (``pg_stat_statements``), CPU split, and the double-assignment
   audit, then the p95 ratio between the largest and smallest sizes.
6. Stops gunicorn and the embedded servers.

Code (one module per job): ``server`` (embedded services, gunicorn),
``data`` (users, campaigns, bulk load, reset), ``client`` (the annotator
threads), ``measure`` (CPU, access log, double-assignment audit), ``explain``
(pg_stat_statements, EXPLAIN, in-process query trace), ``run`` (one run),
``report`` (printing), ``cli`` (arguments and the whole sequence). The entry
point is ``benchmarks/queue_load.py``.
"""
