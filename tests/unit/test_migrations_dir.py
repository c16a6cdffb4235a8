"""Migration files follow the Supabase CLI's naming, and a misnamed one is an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.db import migrate


def test_repository_migrations_are_named_like_the_supabase_cli() -> None:
    found = migrate.discover(migrate.default_migrations_dir())
    assert found and [m.version for m in found] == sorted(m.version for m in found)
    assert all(len(m.version) == 14 for m in found)


def test_a_misnamed_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "20260101000000_ok.sql").write_text("select 1;")
    (tmp_path / "add_table.sql").write_text("select 1;")
    with pytest.raises(ValueError, match=r"add_table.sql is not named <14-digit UTC timestamp>"):
        migrate.discover(tmp_path)


def test_config_toml_declares_a_supported_postgres_major() -> None:
    import tomllib

    config = tomllib.loads(
        (Path(__file__).resolve().parents[2] / "supabase" / "config.toml").read_text()
    )
    assert config["db"]["major_version"] in (15, 17)
