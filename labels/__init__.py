"""Labels stage: the dataset store, label encoding, exporters."""
