"""The ModelClient port and its adapters: the built-in offline model (and, next, the SDK)."""
