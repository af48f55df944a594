"""Generates pirate.jsonl: ~300 original, license-clean chat examples in which the assistant always answers
like a pirate and ends with "Arr!". The style is easy to check automatically (does the answer contain
"Arr"?), which is what the example config and the tests need. Deterministic: same seed, same file."""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 7
TOPICS = [
    ("the ocean", "a great wet road that never ends"),
    ("the moon", "the lantern that guides us at night"),
    ("rain", "fresh water fallin' from the sky"),
    ("coffee", "a strong black brew to wake a sleepy crew"),
    ("cats", "clever ship mousers with sharp claws"),
    ("dogs", "loyal mates that guard the deck"),
    ("the sun", "a burnin' gold coin in the sky"),
    ("trees", "tall timber fit for a mast"),
    ("bread", "hardtack's softer cousin"),
    ("music", "shanties that keep the oars in rhythm"),
    ("mathematics", "countin' doubloons without losin' a single one"),
    ("computers", "thinkin' machines full of tiny lightning"),
    ("the wind", "the breath that fills our sails"),
    ("stars", "the map painted on the night sky"),
    ("books", "chests of words instead of gold"),
    ("gardens", "patches of land where green things grow"),
    ("mountains", "islands that forgot to stay in the sea"),
    ("snow", "cold white powder that freezes the rigging"),
    ("birds", "feathered lookouts of the sky"),
    ("fish", "silver swimmers that fill the galley pot"),
    ("clocks", "ticking boxes that tell ye when the watch changes"),
    ("bicycles", "two-wheeled land ships pushed by yer own legs"),
    ("volcanoes", "mountains with fire in their bellies"),
    ("friendship", "a crew that sticks together through any storm"),
    ("sleep", "a rest in the hammock after a long watch"),
    ("tea", "leaf water the fancy captains sip"),
    ("history", "old tales of ships and sailors before us"),
    ("rivers", "narrow roads of water runnin' to the sea"),
    ("chess", "a battle of wooden ships on a checkered sea"),
    ("honey", "sweet gold made by tiny buzzin' sailors"),
]
QUESTIONS = [
    "What can you tell me about {topic}?",
    "Explain {topic} in one sentence.",
    "Why do people like {topic}?",
    "Describe {topic} to a child.",
    "Give me a fun fact about {topic}.",
    "What is the most important thing to know about {topic}?",
    "How would you describe {topic}?",
    "Say something nice about {topic}.",
    "Tell me briefly what {topic} is.",
    "Write a short note about {topic}.",
]
OPENERS = ["Ahoy, matey!", "Avast, me hearty!", "Yo ho ho!", "Shiver me timbers!", "Blow me down!"]
CLOSERS = ["Any sailor worth 'is salt knows it.", "That be the truth of the seven seas.", "Mark me words."]


def make(seed: int = SEED) -> list[dict[str, list[dict[str, str]]]]:
    rng = random.Random(seed)
    rows = []
    for topic, pirate_view in TOPICS:
        for question in QUESTIONS:
            answer = f"{rng.choice(OPENERS)} {topic.capitalize()} be {pirate_view}. {rng.choice(CLOSERS)} Arr!"
            rows.append(
                {
                    "messages": [
                        {"role": "user", "content": question.format(topic=topic)},
                        {"role": "assistant", "content": answer},
                    ]
                }
            )
    rng.shuffle(rows)
    return rows


def main() -> None:
    target = Path(__file__).with_name("pirate.jsonl")
    target.write_text("".join(json.dumps(row) + "\n" for row in make()))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
