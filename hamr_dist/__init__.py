"""hamr-dist: Hardness-Aware Meta-Resample (HAMR) for imbalanced text classification and NER."""

__version__ = "0.1.0"
