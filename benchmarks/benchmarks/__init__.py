"""asv benchmarks of gatecore (see ../asv.conf.json and common.py)."""
