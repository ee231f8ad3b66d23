"""uia-pipe: what does machine unlearning leak about the data it removes?

Unlearning inversion attacks (Hu et al., S&P 2024) and beyond, as pure
functions; the DVC stages in ``stages/`` wire them to files and MLflow.
"""

__version__ = "0.1.0"
