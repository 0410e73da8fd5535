"""One adapter per system under test, each implementing ``bench.workload.Target``."""
