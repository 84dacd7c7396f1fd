"""vitedit: editing Vision Transformer classifiers on medical images.

Thin, tested functions that the study notebooks (``notebooks/01_split`` ...) call.
"""

__version__ = "0.1.0"
