"""The README's example runs as written."""

import re

from helpers import readme_block


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = readme_block("## Example")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    mse = float(re.search(r"test MSE: ([0-9.e-]+)", out).group(1))
    assert mse < 0.01
    assert (tmp_path / "running_mean.keras").exists()


def test_readme_dynamics_example_runs(tmp_path, monkeypatch):
    code = readme_block("## Dynamics")
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), scope)
    fp, g = scope["fp"], scope["g"]
    assert len(fp) >= 1 and (fp.frame["q"] < fp.settings["tolerance"]).all()
    assert fp.jacobian(0).shape == (8, 8) and scope["start"]["h_prev"].shape == (1, 8)
    assert list(g.columns) == ["sample", "t", "node", "unit", "gradient"]
    assert scope["fig"].layout.yaxis.type == "log"
