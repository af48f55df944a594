from __future__ import annotations

from serving.state.sqlite import connect


def test_the_schema_is_created_once_and_what_is_written_survives_a_reconnect(tmp_path):
    path = tmp_path / "nested" / "state.db"
    first = connect(path)
    first.execute("INSERT INTO routes VALUES ('chat', '{}', 1.0)")  # autocommit: no commit call
    first.close()
    again = connect(path)  # CREATE TABLE IF NOT EXISTS: the schema is applied again without losing rows
    assert again.execute("SELECT name FROM routes").fetchall() == [("chat",)]
    assert again.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    tables = {row[0] for row in again.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"routes", "rollouts", "audit"} <= tables
