"""The HTTP edge: writes user events to the log, reads the projection."""
