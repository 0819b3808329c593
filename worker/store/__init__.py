"""Persistence: SQLModel tables, repositories (all SQL lives here), migrations."""
