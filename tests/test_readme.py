"""The README's example runs as written."""

import re
from pathlib import Path


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    mse = float(re.search(r"test MSE: ([0-9.e-]+)", out).group(1))
    assert mse < 0.01
    assert (tmp_path / "running_mean.keras").exists()


def test_readme_dynamics_example_runs(tmp_path, monkeypatch):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Dynamics.*?```python\n(.*?)```", text, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), scope)
    fp, g = scope["fp"], scope["g"]
    assert len(fp) >= 1 and (fp.frame["q"] < fp.settings["tolerance"]).all()
    assert fp.jacobian(0).shape == (8, 8) and scope["start"]["h_prev"].shape == (1, 8)
    assert list(g.columns) == ["sample", "t", "node", "unit", "gradient"]
    assert scope["fig"].layout.yaxis.type == "log"
