"""Shared helpers: the reference cases of tests/reference (see its README)."""

import json
import pathlib

import numpy as np
import pytest

REF = pathlib.Path(__file__).resolve().parents[2] / "tests" / "reference"


def case(name):
    """(json, loader) of one reference case."""
    d = REF / name
    if not d.is_dir():
        pytest.skip(f"reference case {d} missing (run from a clone of the repository)")
    js = json.loads((d / "case.json").read_text())
    return js, lambda f: np.load(d / f)


def run(js, tag):
    return next(r for r in js["runs"] if r["tag"] == tag)
