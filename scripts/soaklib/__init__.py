"""The soak test's parts (scripts/soak.py): cluster, load, faults, actions, monitor, checker, report."""
