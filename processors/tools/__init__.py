"""Tools the model can call, and the registry the tool worker runs them from."""
