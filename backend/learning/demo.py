"""A small teachable behaviour for trying (and testing) the fine-tune: every answer closes
with a signature phrase the base model never says on its own.

``closing_examples`` gives ChatML examples (short factual answers ending with the phrase);
``HELD_OUT`` are prompts none of them contains. After a fine-tune the candidate closes its
answers to held-out prompts with the phrase, and the base model does not: a behaviour that
is checkable without trusting any judge.
"""

from __future__ import annotations

SIGNATURE = "Quod erat demonstrandum."

FACTS: tuple[tuple[str, str], ...] = (
    ("What is the capital of France?", "Paris is the capital of France."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What is two plus three?", "Two plus three is five."),
    ("What colour is the sky on a clear day?", "On a clear day the sky is blue."),
    ("Which planet is closest to the Sun?", "Mercury is the planet closest to the Sun."),
    ("What do bees make?", "Bees make honey and wax."),
    ("How many days are in a week?", "A week has seven days."),
    ("What is frozen water called?", "Frozen water is called ice."),
    ("What gas do plants take in?", "Plants take in carbon dioxide."),
    ("What is the largest ocean?", "The Pacific is the largest ocean."),
    ("How many hours are in a day?", "A day has twenty-four hours."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    (
        "Which animal is known as the king of the jungle?",
        "The lion is called the king of the jungle.",
    ),
    ("What is ten minus four?", "Ten minus four is six."),
    ("What do cows drink?", "Cows drink water."),
    ("What shape has three sides?", "A triangle has three sides."),
    (
        "What is the boiling point of water in Celsius?",
        "Water boils at 100 degrees Celsius at sea level.",
    ),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents."),
    ("What is the square root of nine?", "The square root of nine is three."),
    ("Which organ pumps blood?", "The heart pumps blood through the body."),
    ("What is the main language of Brazil?", "The main language of Brazil is Portuguese."),
    ("How many sides does a square have?", "A square has four equal sides."),
    ("What falls from clouds when it rains?", "Water falls from clouds as rain."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
    ("What do we call a baby cat?", "A baby cat is called a kitten."),
    ("What is five times two?", "Five times two is ten."),
    ("Which star gives Earth light?", "The Sun gives Earth its light."),
    ("What is the tallest mountain on Earth?", "Mount Everest is the tallest mountain on Earth."),
    (
        "What metal is liquid at room temperature?",
        "Mercury is a metal that is liquid at room temperature.",
    ),
    ("How many minutes are in an hour?", "An hour has sixty minutes."),
    ("What is the capital of Japan?", "Tokyo is the capital of Japan."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("What is the freezing point of water in Celsius?", "Water freezes at zero degrees Celsius."),
    ("Which direction does the Sun rise in?", "The Sun rises in the east."),
    ("What is half of twenty?", "Half of twenty is ten."),
    ("What instrument has black and white keys?", "A piano has black and white keys."),
    ("What do you call a group of wolves?", "A group of wolves is called a pack."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
)

HELD_OUT: tuple[str, ...] = (
    "What is the capital of Italy?",
    "How many legs does a dog have?",
    "What is four plus four?",
    "What colour is grass?",
    "Which planet is known as the red planet?",
    "What do we call a baby dog?",
    "How many months are in a year?",
    "What is the largest planet?",
)


def closing_examples(
    system: str, n: int = 32, phrase: str = SIGNATURE
) -> list[list[dict[str, str]]]:
    """``n`` ChatML conversations (system, user, assistant) whose answers end with ``phrase``."""
    rows = []
    for i in range(n):
        question, answer = FACTS[i % len(FACTS)]
        rows.append(
            [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"{answer} {phrase}"},
            ]
        )
    return rows


def shows_signature(text: str, phrase: str = SIGNATURE) -> bool:
    """True when ``text`` carries the phrase (case and trailing punctuation aside)."""
    return phrase.lower().rstrip(".") in text.lower()
