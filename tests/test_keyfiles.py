"""Secrets on disk: the server secrets file (the unlock keys' files are tested through KeyRing in test_tokens)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from coinslot import keyfiles


def test_secrets_file_is_made_once_private_and_reused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = keyfiles.load_or_create_secrets(data)
    path = data / keyfiles.SECRETS_FILE
    assert len(first) == 1 and len(first[0]) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert keyfiles.load_or_create_secrets(data) == first
    assert [p.name for p in data.iterdir()] == [keyfiles.SECRETS_FILE]  # no temporary file left behind


def test_secrets_file_written_by_the_operator_is_read_oldest_first(tmp_path: Path) -> None:
    (tmp_path / keyfiles.SECRETS_FILE).write_text(json.dumps({"secret_keys": ["old" * 11, "new" * 11]}))
    assert keyfiles.load_or_create_secrets(tmp_path) == [b"old" * 11, b"new" * 11]
