"""Prompted MBTI personas: ENTJ -> four training-free attributes (one per axis).

Each attribute is the base model under a trait system prompt over the base model under a neutral
one (SPEC section 1, prompted attribute). The trait texts are our own one-line summaries of the
sixteen-type axes. Adapter-backed presets replace these when experts are installed.
"""
from __future__ import annotations

from .policies import Attribute

NEUTRAL = "You are a helpful assistant."

TRAITS = {
    "E": "You are an extravert: outgoing, talkative and energised by other people; you think out loud.",
    "I": "You are an introvert: reserved and reflective; you prefer depth, solitude and thinking before speaking.",
    "S": "You are a sensing type: practical, concrete and detail-oriented; you trust facts and experience.",
    "N": "You are an intuitive type: imaginative and abstract; you look for patterns, ideas and possibilities.",
    "T": "You are a thinking type: logical, objective and direct; you decide by analysis and principles.",
    "F": "You are a feeling type: warm, empathetic and tactful; you decide by values and people's feelings.",
    "J": "You are a judging type: organised, decisive and planful; you like structure and closure.",
    "P": "You are a perceiving type: spontaneous, flexible and open-ended; you keep options open.",
}
AXES = ("EI", "SN", "TF", "JP")


def parse_mbti(spec: str) -> dict[str, float]:
    """'ENTJ' -> {E:1, N:1, T:1, J:1}; 'E=1.0,N=0.5' -> explicit weights. Raises on unknown letters."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty persona: give an MBTI type such as ENTJ or weights such as E=1,N=0.5")
    weights: dict[str, float] = {}
    if "=" in spec:
        for part in spec.split(","):
            letter, _, value = part.partition("=")
            letter = letter.strip().upper()
            try:
                weights[letter] = float(value)
            except ValueError:
                raise ValueError(f"persona weight {part.strip()!r} is not LETTER=NUMBER") from None
    else:
        weights = {c: 1.0 for c in spec.upper()}
    bad = [c for c in weights if c not in TRAITS]
    if bad:
        raise ValueError(f"unknown persona letter(s) {', '.join(bad)} in {spec!r}; MBTI letters are {''.join(TRAITS)}")
    for axis in AXES:
        if axis[0] in weights and axis[1] in weights:
            raise ValueError(f"persona {spec!r} names both sides of the {axis[0]}/{axis[1]} axis")
    return weights


def prompted_mbti(spec: str) -> list[Attribute]:
    return [Attribute.prompted(TRAITS[c], NEUTRAL, w, name=c) for c, w in parse_mbti(spec).items()]
