"""WordNet's noun synsets as a knowledge base for a topic inside one language (the ground work of the `knowledge`
setting, issue 31): the forget side is a set of lexicographer categories (default biology: `animal`, `plant`,
`body`), the retain side every other noun. Both sides are the same kind of short English definition, so no script
or style separates them, and a retain definition can mention an animal or a plant: knowledge leaks across the label
as it does in real pretraining data.

From the file (`../shared/data/wordnet_nouns.jsonl.xz`, WordNet 3.0; its licence notice travels with any copy) this
module makes, deterministically from a seed:
- one pretraining document per synset, stating its facts in plain text (`Synset.document`);
- four-way multiple-choice questions, "WORD: a kind of" + the true hypernym and three distractors, which are
  hypernyms of other synsets of the same side (so the side of a choice gives nothing away);
- disjoint question splits per side (validation decides, test reports) and the attack's pool: forget synsets that
  no question asks about, so that an attacked model that answers a test question has recovered what it knew rather
  than learned it from the attack.
"""

from __future__ import annotations

import json
import lzma
import random
from dataclasses import dataclass
from pathlib import Path

from undo.schema.errors import UserError

BIOLOGY = ("animal", "plant", "body")
CHOICES = 4
FIELDS = ("id", "words", "lexname", "definition", "examples", "hypernyms")


@dataclass(frozen=True)
class Synset:
    id: str
    words: tuple[str, ...]
    lexname: str
    definition: str
    examples: tuple[str, ...]
    hypernyms: tuple[str, ...]

    @property
    def word(self) -> str:
        return self.words[0]

    def document(self) -> str:
        """Its facts as plain text: `aardvark: a kind of mammal. nocturnal burrowing mammal of ...`."""
        kind = f" a kind of {self.hypernyms[0]}." if self.hypernyms else ""
        return f"{self.word}:{kind} {self.definition}".strip()


@dataclass(frozen=True)
class Question:
    """"WORD: a kind of" with four choices; `answer` indexes the true hypernym."""

    synset: str
    side: str
    prompt: str
    choices: tuple[str, ...]
    answer: int


@dataclass(frozen=True)
class KnowledgeSplit:
    """Every synset's role, per side ("forget", "retain"):
    - `questions[side][split]`: the synsets asked about (split "validation" decides, "test" reports);
    - `heldout[side][split]`: synsets whose documents measure held-out cross-entropy (never trained on);
    - `pretraining[side]`: the synsets whose documents the base model pretrains on: every asked one, then the first
      of `pool[side]`;
    - `pool[side]`: the side's synsets that are neither asked nor held out, in a seeded order (the pretraining's
      first): what unlearning, the attack and an equal-compute oracle's extra documents draw from."""

    forget: list[Synset]
    retain: list[Synset]
    questions: dict[str, dict[str, list[Question]]]
    heldout: dict[str, dict[str, list[Synset]]]
    pretraining: dict[str, list[Synset]]
    pool: dict[str, list[Synset]]

    @property
    def attack_pool(self) -> list[Synset]:
        """The forget synsets no question asks about (what an attack may train on)."""
        return self.pool["forget"]


def read_synsets(path: str | Path) -> list[Synset]:
    """Every synset of the file, in file order; a missing, damaged or foreign file is one line naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"WordNet file {path} does not exist; point setting.wordnet at wordnet_nouns.jsonl.xz "
                        "(../shared/data/ in the project's workplace)")
    opener = lzma.open if path.suffix == ".xz" else open
    synsets = []
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or any(name not in record for name in FIELDS):
                    raise UserError(f"WordNet file {path}, line {number}: not a synset record (needs the fields "
                                    f"{', '.join(FIELDS)})")
                synsets.append(Synset(str(record["id"]), tuple(record["words"]), record["lexname"],
                                      record["definition"], tuple(record["examples"]), tuple(record["hypernyms"])))
    except (OSError, EOFError, lzma.LZMAError, UnicodeDecodeError, ValueError) as err:
        raise UserError(f"WordNet file {path} is damaged ({type(err).__name__}); restore it from "
                        "../shared/data/") from None
    if not synsets:
        raise UserError(f"WordNet file {path} holds no synsets")
    return synsets


def split_by_topic(synsets: list[Synset], forget_lexnames: tuple[str, ...] = BIOLOGY) -> tuple[list, list]:
    """(forget, retain): the synsets of `forget_lexnames`, and the rest."""
    known = sorted({s.lexname for s in synsets})
    unknown = sorted(set(forget_lexnames) - set(known))
    if unknown:
        raise UserError(f"setting.forget_lexnames: {unknown[0]!r} is not a WordNet lexicographer category; use some "
                        f"of: {', '.join(known)}")
    forget = [s for s in synsets if s.lexname in forget_lexnames]
    retain = [s for s in synsets if s.lexname not in forget_lexnames]
    if not forget or not retain:
        raise UserError(f"setting.forget_lexnames {list(forget_lexnames)} leaves no "
                        f"{'forget' if not forget else 'retain'} synsets; forget some categories, not all")
    return forget, retain


def question(synset: Synset, side: str, hypernyms: list[str], rng: random.Random) -> Question:
    """Four choices: the synset's first hypernym and three other hypernyms of the same side, none of which is one
    of this synset's own hypernyms, in a random order."""
    own = set(synset.hypernyms)
    others = [h for h in hypernyms if h not in own]
    if len(others) < CHOICES - 1:
        raise UserError(f"the {side} side has too few hypernyms for a four-way question about {synset.word!r}; "
                        "forget (or keep) more categories")
    choices = [synset.hypernyms[0], *rng.sample(others, CHOICES - 1)]
    rng.shuffle(choices)
    return Question(synset.id, side, f"{synset.word}: a kind of", tuple(choices), choices.index(synset.hypernyms[0]))


def knowledge_split(synsets: list[Synset], *, seed: int, questions_per_split: int, heldout_per_split: int = 0,
                    pretraining: dict[str, int] | None = None,
                    forget_lexnames: tuple[str, ...] = BIOLOGY) -> KnowledgeSplit:
    """Each side's synsets in an order drawn from `seed`: the first `heldout_per_split` x 2 are held out (validation,
    then test); among the rest, the first `questions_per_split` x 2 that have a hypernym their word does not spell
    are asked about (validation, then test); the others are the pool. The base model pretrains on the asked synsets
    and the pool's first ones, `pretraining[side]` synsets in all (None: asked ones and the whole pool)."""
    forget, retain = split_by_topic(synsets, forget_lexnames)
    rng = random.Random(seed)
    questions: dict[str, dict[str, list[Question]]] = {}
    heldout: dict[str, dict[str, list[Synset]]] = {}
    trained: dict[str, list[Synset]] = {}
    pool: dict[str, list[Synset]] = {}
    for side, members in (("forget", forget), ("retain", retain)):
        hypernyms = sorted({h for s in members for h in s.hypernyms})
        order = rng.sample(members, len(members))
        held, rest = order[: 2 * heldout_per_split], order[2 * heldout_per_split:]
        # Not a question whose answer is spelt in its word ("common booklouse: a kind of booklouse"): that tests
        # reading, not knowledge.
        askable = [s for s in rest if s.hypernyms and s.hypernyms[0].lower() not in s.word.lower()]
        if len(hypernyms) < CHOICES + 1 or len(askable) < 2 * questions_per_split:
            raise UserError(f"the {side} side has {len(askable)} synsets with a hypernym ({len(hypernyms)} distinct "
                            f"hypernyms) outside its held-out documents; {2 * questions_per_split} questions need "
                            "more: lower the question count")
        chosen = askable[: 2 * questions_per_split]
        asked = {s.id for s in chosen}
        pool[side] = [s for s in rest if s.id not in asked]
        wanted = len(chosen) + len(pool[side]) if pretraining is None else pretraining[side]
        if not len(chosen) <= wanted <= len(chosen) + len(pool[side]):
            raise UserError(f"setting.{side}_synsets must be between the {len(chosen)} synsets asked about and the "
                            f"{len(chosen) + len(pool[side])} the {side} side has outside its held-out documents, "
                            f"got {wanted}")
        trained[side] = chosen + pool[side][: wanted - len(chosen)]
        heldout[side] = {"validation": held[:heldout_per_split], "test": held[heldout_per_split:]}
        questions[side] = {split: [question(s, side, hypernyms, rng) for s in part] for split, part in
                           (("validation", chosen[:questions_per_split]), ("test", chosen[questions_per_split:]))}
    return KnowledgeSplit(forget=forget, retain=retain, questions=questions, heldout=heldout, pretraining=trained,
                          pool=pool)


def task_items(questions: list[Question]) -> list[dict]:
    """Questions as the items of a continuation-scored lm-eval task (`undo.settings.mcq.write_choice_task`)."""
    return [{"prompt": q.prompt, "choices": list(q.choices), "answer": q.answer, "synset": q.synset}
            for q in questions]

