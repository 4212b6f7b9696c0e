"""Spec lint: warnings (SpecWarning) for what compiles but is probably a mistake."""
import warnings

import pytest

import rnncc
from rnncc import SpecWarning
from rnncc.frontend.lint import one_edit_apart


def warnings_of(text):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cell = rnncc.compile(text)
    found = [w.message for w in caught if issubclass(w.category, SpecWarning)]
    assert [str(w) for w in found] == [str(w) for w in cell.warnings]
    return found


def test_an_intermediate_nothing_reads_is_reported_at_its_line():
    found = warnings_of("cell t\ninput x[I]\nstate h[H]\nunused = sigmoid(h)\nq = tanh(h)\n"
                        "output q\nh' = tanh(W @ x + h)\n")
    assert len(found) == 1
    w = found[0]
    assert (w.line, w.col) == (4, 1) and "'unused' is computed but nothing reads it" in w.msg
    assert str(w).startswith("<spec>:4:1: warning: ") and "unused = sigmoid(h)" in str(w)


def test_a_parameter_one_edit_from_a_value_asks_did_you_mean():
    found = warnings_of("cell t\ninput x[I]\nstate h[H], c[H]\ng = tanh(W @ x)\n"
                        "h' = tanh(gg * h + g + xab + cc)\nc' = c\n")
    msgs = {(w.line, w.col): w.msg for w in found}
    assert set(msgs) == {(5, 11), (5, 30)}   # gg ~ g and cc ~ c; xab is two edits from x
    assert "did you mean 'g'?" in msgs[5, 11] and "did you mean 'c'?" in msgs[5, 30]


def test_declared_parameters_and_one_letter_pairs_are_not_reported():
    assert warnings_of("cell t\ninput x[I]\nstate h[H]\nparam gg[H]\ng = tanh(W @ x)\n"
                       "h' = tanh(gg * h + g + u * h)\n") == []


@pytest.mark.parametrize("name", rnncc.shipped())
def test_shipped_specs_are_lint_clean(name):
    assert rnncc.load(name).warnings == []


def test_warnings_are_silenced_by_the_usual_filters():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("ignore", SpecWarning)
        rnncc.compile("cell t\ninput x[I]\nstate h[H]\nz = h\nh' = tanh(W @ x)\n")
    assert caught == []


def test_one_edit_apart():
    assert one_edit_apart("gg", "g") and one_edit_apart("g", "gg") and one_edit_apart("ab", "ac")
    assert one_edit_apart("abc", "ac") and not one_edit_apart("abc", "ca")
    assert not one_edit_apart("g", "g") and not one_edit_apart("abcd", "ab")
