"""`make bench`: core, Kafka and memory benchmarks of socnoc, ending with one JSON line.

`python -m bench.run` measures, in one run on one machine: the correlation core (adapters +
engine, no Kafka) on the real AIT-ADS data and on a 1M-alert synthetic stream, a pinned raw
aiokafka pipeline against the socnoc worker on the same embedded broker, latency under steady
load, and memory per active asset. See README.md "Performance".
"""
