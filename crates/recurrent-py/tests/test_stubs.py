"""The type stubs and docstrings cover the public API."""

import ast
import inspect
import pathlib

import pytest

import recurrent



@pytest.mark.parametrize("name", ["Model", "OnlineLearner"])
def test_stubs_are_installed_and_list_every_public_method(name):
    pkg = pathlib.Path(recurrent.__file__).parent
    assert (pkg / "py.typed").exists()
    tree = ast.parse((pkg / "__init__.pyi").read_text())
    assert set(recurrent.__all__) - {"__version__"} <= {n.name for n in tree.body if hasattr(n, "name")}
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    real = getattr(recurrent, name)
    stubbed = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
    public = {n for n, _ in inspect.getmembers(real) if not n.startswith("_")} | {"__init__"}
    assert public <= stubbed, public - stubbed
    # and the stub's keywords are the implementation's
    for f in cls.body:
        member = inspect.getattr_static(real, f.name, None) if isinstance(f, ast.FunctionDef) else None
        if member is None or isinstance(member, property):
            continue
        want = list(inspect.signature(getattr(real, f.name)).parameters)
        got = [a.arg for a in f.args.args]
        if isinstance(member, classmethod):
            want = ["cls"] + want
        assert got == want, f.name


def test_every_public_function_has_a_docstring():
    assert recurrent.__doc__ and recurrent.pad_sequences.__doc__
    for cls in (recurrent.Model, recurrent.OnlineLearner):
        assert cls.__doc__
        for name, member in inspect.getmembers(cls):
            if not name.startswith("_"):
                assert member.__doc__ if not isinstance(member, property) else member.fget.__doc__, name
