"""The workers: the reactor decides, effect workers do, the projector writes Postgres."""
