"""Integrations with platforms outside warelay: external AI agent platforms (OAuth connection, events)."""
