"""cerebro_plpy.state_files, the state files' I/O, in a directory of its own (a backend runs in the data directory)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from cerebro_plpy import state_files
from cerebro_plpy.state import ModelState

DIRECTORY = "cerebro_states/5"


@pytest.fixture(autouse=True)
def data_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_state_written_in_pieces_reads_back_whole() -> None:
    state = ModelState([np.arange(6, dtype=np.float32).reshape(2, 3)], [np.array(7, dtype=np.int64)], {"k": 1})
    size = state_files.write(DIRECTORY, "c1-x10.state", state.buffers())
    mapped = state_files.read(DIRECTORY, "c1-x10.state")
    assert mapped is not None and size == len(mapped) == len(state.encode())
    back = ModelState.decode(mapped, copy=False)
    assert back.model_variables[0].tolist() == state.model_variables[0].tolist() and back.meta == {"k": 1}
    assert oct(os.stat(Path(DIRECTORY, "c1-x10.state")).st_mode & 0o777) == "0o600"


def test_a_file_that_is_gone_reads_as_none() -> None:
    assert state_files.read(DIRECTORY, "c1-x10.state") is None
    assert state_files.names(DIRECTORY) == []


def test_rewriting_a_name_never_changes_its_other_names() -> None:
    """A rolled-back attempt's file may have been linked: writing the name again must not truncate the link."""
    state_files.write(DIRECTORY, "c1-x10.state", [b"first"])
    assert state_files.link(DIRECTORY, "c1-x10.state", "c1-x11.staged")
    state_files.write(DIRECTORY, "c1-x10.state", [b"second"])
    assert bytes(state_files.read(DIRECTORY, "c1-x11.staged") or b"") == b"first"
    assert bytes(state_files.read(DIRECTORY, "c1-x10.state") or b"") == b"second"


def test_link_rename_and_delete() -> None:
    state_files.write(DIRECTORY, "c1-x10.state", [b"abc"])
    assert not state_files.link(DIRECTORY, "c9-x9.state", "c2-x11.staged")  # no such source
    assert state_files.link(DIRECTORY, "c1-x10.state", "c1-x11.staged")
    state_files.rename(DIRECTORY, "c1-x11.staged", "c2-x11.state")
    assert state_files.names(DIRECTORY) == ["c1-x10.state", "c2-x11.state"]
    assert state_files.delete(DIRECTORY, ["c1-x10.state", "c3-x1.state"]) == 1  # one already gone: no error
    assert bytes(state_files.read(DIRECTORY, "c2-x11.state") or b"") == b"abc"


def test_names_lists_only_state_files(data_directory: Path) -> None:
    state_files.write(DIRECTORY, "c1-x10.state", [b"abc"])
    (data_directory / DIRECTORY / "notes.txt").write_text("a DBA's")
    assert state_files.names(DIRECTORY) == ["c1-x10.state"]


@pytest.mark.parametrize(
    ("directory", "name"),
    [
        (DIRECTORY, "../../postgresql.conf"),
        (DIRECTORY, "c1-x1.state/../../x"),
        ("cerebro_states/5/..", "c1-x1.state"),
        ("/etc", "c1-x1.state"),
        (DIRECTORY, "c1-x1.staged.state"),
    ],
)
def test_paths_outside_the_state_directory_are_refused(directory: str, name: str) -> None:
    with pytest.raises(state_files.StateFileError, match="is not a state"):
        state_files.write(directory, name, [b"x"])
    with pytest.raises(state_files.StateFileError, match="is not a state"):
        state_files.read(directory, name)


def test_the_directories_of_dropped_databases_go(data_directory: Path) -> None:
    state_files.write("cerebro_states/5", "c1-x10.state", [b"abc"])
    state_files.write("cerebro_states/6", "c1-x10.state", [b"abc"])
    (data_directory / "cerebro_states" / "README").write_text("not a database's")
    assert state_files.delete_other_databases([5, 7]) == ["6"]
    assert sorted(os.listdir(data_directory / "cerebro_states")) == ["5", "README"]
