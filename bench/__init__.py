"""Benchmarks of tvq: attention scaling, sampling, training throughput and chart rendering.

Each benchmark is a module run as `python -m bench.NAME --device-tag TAG --out DIR`; it writes
`DIR/NAME-TAG.json` and `DIR/NAME-TAG.png`. `bench/run_all.sh DIR` runs them all.
"""
