"""Portico: an event-driven agent runtime for Supabase."""

__all__: list[str] = []
