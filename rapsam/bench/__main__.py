"""`python -m rapsam.bench`: the rapsam-bench command, for machines where the package is on PYTHONPATH only."""

from rapsam.cli import bench_main

raise SystemExit(bench_main())
