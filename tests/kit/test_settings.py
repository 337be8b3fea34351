"""Where each service's database is: its own URL, else its schema of DATABASE_URL, else a SQLite file."""

from services.kit.settings import Settings


def test_each_service_has_its_own_schema_of_database_url(tmp_path, monkeypatch):
    for name in ("DATABASE_URL", "KAOHE_INTAKE_DATABASE_URL", "KAOHE_ACCESS_DATABASE_URL",
                 "KAOHE_RANKING_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for url in ("postgresql://kaohe@db/kaohe", "postgres://kaohe@db/kaohe", "postgresql+psycopg://kaohe@db/kaohe"):
        settings = Settings(database_url=url, data_dir=tmp_path)
        assert [settings.database(s) for s in ("intake", "access")] == [(url, "intake"), (url, "access")]
    own = Settings(database_url="postgresql://kaohe@db/kaohe", scoring_database_url="postgresql://other/s",
                   data_dir=tmp_path)
    assert own.database("scoring") == ("postgresql://other/s", None)  # its own URL wins, as given
    assert Settings(data_dir=tmp_path).database("ranking") == (f"sqlite:///{tmp_path.resolve() / 'ranking.db'}", None)
