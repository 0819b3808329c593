"""People who sign in to the console: their roles, passwords, sessions, the slow-down after
failed sign-ins, and the audit log of who did what, when and why."""
