"""The model side: load (policy / reference / processor), inputs (samples -> model inputs), tiny (offline test model)."""
