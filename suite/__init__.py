"""Orchestration above the stages: the suite runner (one checkpoint in, every
downstream number out) and the paper-style report. It imports the core and the
stages' configs by path; neither the core nor a stage imports it."""
