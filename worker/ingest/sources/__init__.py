"""Webhook sources: what each vendor's deliveries mean, as pure functions (no database, no HTTP)."""
