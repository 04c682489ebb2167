"""orca: cross-modal fine-tuning of pretrained transformers (ORCA, FPT)."""
__version__ = "0.1.0"
