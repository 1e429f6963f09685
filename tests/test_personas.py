import pytest

from mpg.personas import parse_mbti, prompted_mbti


def test_type_and_weights():
    assert parse_mbti("entj") == {"E": 1.0, "N": 1.0, "T": 1.0, "J": 1.0}
    assert parse_mbti("E=1.0, N=0.5") == {"E": 1.0, "N": 0.5}
    attrs = prompted_mbti("ISFP")
    assert [a.name for a in attrs] == list("ISFP")
    assert all(a.num.system != a.den.system for a in attrs)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("", "empty persona"),
        ("ENXJ", "unknown persona letter"),
        ("EI", "both sides"),
        ("E=high", "LETTER=NUMBER"),
    ],
)
def test_bad_personas(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_mbti(spec)
