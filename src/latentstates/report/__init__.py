"""Report: figures, interactive views and tables."""
