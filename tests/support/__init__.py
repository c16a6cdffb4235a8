"""Test helpers: real PostgreSQL servers, databases cloned from a migrated template, waiting."""
