"""Experiments that chain the building blocks: the end-to-end demo, UIPE mechanism studies, sweeps."""
