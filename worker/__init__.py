"""Nurture: lead-nurture sequences as code."""

__version__ = "0.1.0"
