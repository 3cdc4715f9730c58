"""One result interface (`surgeon.core.tables.Tabular`): every type in `surgeon.results` has
``to_dict`` (strict JSON), ``tidy``, ``to_pandas``, ``save`` (JSON or CSV by suffix, refusing to
overwrite without ``overwrite=True``, atomically), ``plot`` (a Figure) and ``_repr_html_``."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

import surgeon  # noqa: E402
from surgeon import results  # noqa: E402
from surgeon.core.errors import SurgeonError  # noqa: E402
from test_conventions import _examples  # noqa: E402


@pytest.fixture(scope="module")
def examples():
    return _examples()


def test_every_exported_result_type_has_an_example_and_the_interface(examples):
    exported = {getattr(results, name) for name in results.__all__}
    assert exported <= set(examples), sorted(c.__name__ for c in exported - set(examples))
    for kind in exported:
        for method in ("to_dict", "tidy", "to_pandas", "save", "plot", "_repr_html_"):
            assert callable(getattr(kind, method, None)), f"{kind.__name__}.{method}"


@pytest.mark.parametrize("name", results.__all__)
def test_the_whole_interface(name, examples, tmp_path):
    result = examples[getattr(results, name)]
    as_dict = result.to_dict()
    assert isinstance(as_dict, dict) and as_dict
    json.dumps(surgeon.core.jsonio.plain(as_dict), allow_nan=False)  # strict JSON
    assert result.tidy()
    path = result.save(tmp_path / "r.json")
    assert json.loads(path.read_text()) == json.loads(surgeon.core.jsonio.dumps(as_dict))
    csv = result.save(tmp_path / "r.csv")
    assert csv.read_text().splitlines()[0].endswith("quantity,value") or "quantity" in csv.read_text().splitlines()[0]
    with pytest.raises(SurgeonError, match="overwrite=True"):
        result.save(tmp_path / "r.json")
    assert result.save(tmp_path / "r.json", overwrite=True) == tmp_path / "r.json"
    with pytest.raises(SurgeonError, match=".json or .csv"):
        result.save(tmp_path / "r.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv", "r.json"]  # no temp file left
    fig = result.plot()
    assert isinstance(fig, Figure) and fig.axes
    plt.close(fig)
    assert "<table>" in result._repr_html_()


def _writers(examples):
    """Every library writer of a user-named file, as ``write(path, **overwrite)``."""
    result = next(iter(examples.values()))
    model = surgeon.load_model("resnet10t", num_classes=2)
    return {
        "figure.png": lambda p, **k: surgeon.viz.save_figure(plt.figure(), p, **k),
        "result.json": lambda p, **k: result.save(p, **k),
        "result.csv": lambda p, **k: result.to_csv(p, **k),
        "model.safetensors": lambda p, **k: surgeon.save(model, p, **k),
    }


def test_every_writer_refuses_an_existing_file_unless_overwrite(examples, tmp_path):
    """One overwrite policy (`surgeon.core.files.check_output`): a second write to the same path is
    refused in one line naming ``overwrite=True``, and leaves the first file as it was."""
    for name, write in _writers(examples).items():
        path = tmp_path / name
        write(path)
        before = path.read_bytes()
        with pytest.raises(SurgeonError, match="overwrite=True"):
            write(path)
        assert path.read_bytes() == before
        assert write(path, overwrite=True) == path
    plt.close("all")
