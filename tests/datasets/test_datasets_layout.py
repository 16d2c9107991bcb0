"""Where a dataset's files are: paths inside the data directory, tables, comma-list options,
landmark pairing, and the layouts ``mibench list`` shows."""

import numpy as np
import pytest
from helpers.datasets import invoke

from mibench.datasets.layout import (
    check_data_dir,
    comma_list,
    common_prefix,
    find_table,
    read_csv_table,
    resolve_inside,
)


def test_resolve_inside_refuses_escapes(tmp_path):
    assert resolve_inside(tmp_path, "a/b/../c.png", "t.csv, row 0") == tmp_path / "a" / "c.png"
    with pytest.raises(ValueError, match=r"t.csv, row 3: path '../x.png' escapes"):
        resolve_inside(tmp_path, "../x.png", "t.csv, row 3")
    with pytest.raises(ValueError, match="escapes"):
        resolve_inside(tmp_path, "a/../../x.png", "t.csv, row 3")
    with pytest.raises(ValueError, match="absolute"):
        resolve_inside(tmp_path, "/etc/passwd", "t.csv, row 3")


def test_check_data_dir(tmp_path):
    assert check_data_dir(tmp_path, "cover") == tmp_path
    (tmp_path / "file.csv").write_text("x\n")
    with pytest.raises(ValueError, match=r"file\.csv: data directory is a file, not a "
                                         r"directory"):
        check_data_dir(tmp_path / "file.csv", "cover")
    with pytest.raises(ValueError, match=r"nowhere: data directory does not exist"):
        check_data_dir(tmp_path / "nowhere", "cover")


def test_a_table_path_that_is_a_folder_says_so(tmp_path):
    (tmp_path / "imgs").mkdir()
    with pytest.raises(ValueError, match=r"imgs: cover table path is a folder, not a file "
                                         r"\(-o table=PATH\)"):
        find_table(tmp_path, "imgs")


def test_table_of_the_same_name_in_two_places_is_refused(tmp_path, monkeypatch):
    """ANHIR's default table name in the data folder and a stray copy where the command runs:
    neither is taken silently; the same file reached both ways is fine."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "dataset_medium.csv").write_text("a\n")
    monkeypatch.chdir(tmp_path)
    assert find_table(data, "dataset_medium.csv") == (data / "dataset_medium.csv").resolve()
    monkeypatch.chdir(data)
    assert find_table(data, "dataset_medium.csv") == (data / "dataset_medium.csv").resolve()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "dataset_medium.csv").write_text("b\n")
    monkeypatch.chdir(elsewhere)
    with pytest.raises(ValueError, match=r"dataset_medium\.csv: two cover tables of that name, "
                                         r".*elsewhere.* and .*data.*absolute path"):
        find_table(data, "dataset_medium.csv")
    assert find_table(data, str(elsewhere / "dataset_medium.csv")).parent == elsewhere


def test_read_csv_table_keeps_text_and_names_missing_columns(tmp_path):
    table = tmp_path / "t.csv"
    table.write_text(" a , b\n007, x\n\n,NA\n")
    frame = read_csv_table(table, "test table", ("a", "b"), "a, b")
    assert list(frame.columns) == ["a", "b"]
    assert frame.to_dict("records") == [{"a": "007", "b": "x"}, {"a": "", "b": "NA"}]
    kept = read_csv_table(table, "test table", ("a",), "a", keep_blank_lines=True)
    assert len(kept) == 3 and kept.iloc[1].tolist() == ["", ""]
    with pytest.raises(ValueError, match=r"t\.csv: not a test table: missing column\(s\) 'c' "
                                         r"\(expected a, b, c\)$"):
        read_csv_table(table, "test table", ("a", "c"), "a, b, c")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: cannot read the test table as CSV "
                                         r"\(EmptyDataError"):
        read_csv_table(tmp_path / "empty.csv", "test table", ("a",), "a")


def test_comma_list_options():
    assert comma_list("p, S,s ,a", ("S", "P", "A"), "categories") == ("P", "S", "A")
    assert comma_list("Histology", ("fundus", "histology"), "families") == ("histology",)
    for bad in ("S,X", " , ", ""):
        with pytest.raises(ValueError, match=rf"^option 'categories' takes a comma list of S, "
                                             rf"P, A; got '{bad}'$"):
            comma_list(bad, ("S", "P", "A"), "categories")


def test_common_prefix_warns_and_notes():
    notes = []
    f, m = np.zeros((5, 2)), np.ones((3, 2))
    with pytest.warns(UserWarning, match="5 fixed and 3 moving landmarks; using the first 3"):
        f2, m2 = common_prefix(f, m, "pair x", notes)
    assert len(f2) == len(m2) == 3 and "pair x" in notes[0]


def test_list_shows_each_dataset_layout_and_source():
    result = invoke("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    for name, layout, source in (
        ("fire", "Ground Truth/control_points_<C><NN>_1_2.txt", "projects.ics.forth.gr"),
        ("anhir", "<tissue>_<k>/scale-<P>pc/<name>.jpg|png", "anhir.grand-challenge.org"),
        ("cover", "'Target image', 'Source image'", "your own data"),
        ("nifti", "a CSV manifest", "your own data"),
    ):
        start = next(i for i, line in enumerate(lines) if line.split()[:1] == [name])
        block = "\n".join(lines[start + 1: start + 4])
        assert "layout:" in block and layout in block, block
        assert "get it:" in block and source in block, block
