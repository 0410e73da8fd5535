"""The benchmark harness: one workload, run on eventbank, the eventsourcing library and raw-SQL
floors on every engine, reported side by side (``python -m bench --help``)."""
