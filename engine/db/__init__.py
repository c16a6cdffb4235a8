"""Database set-up: the Supabase bootstrap for plain PostgreSQL, migrations, the embedded server."""
