"""A small generated, imbalanced text-classification corpus for demos and tests.

Six topical classes (sports, weather, cooking, finance, medicine, travel) written from
templates and per-class vocabulary. Class sizes fall geometrically so that the largest train
class is 25x the smallest (dev and test follow the same proportions, every class present).
About 10 % of the samples are hard: subject and verb come from their class, object and detail
from another class, so a frozen sentence encoder with a small head learns the corpus well but
not perfectly. No text occurs twice, across splits included. Same seed, same corpus.
"""
from __future__ import annotations

import random

from hamr_dist.data.schema import LoadedData

CLASSES = ["sports", "weather", "cooking", "finance", "medicine", "travel"]
IMBALANCE = 25.0          # largest / smallest class in every split
HARD_FRACTION = 0.10
DEV_SIZE, TEST_SIZE = 400, 600

# per class: subjects, verb phrases, objects, details
VOCAB = {
    "sports": (
        ["the home team", "our striker", "the young goalkeeper", "the tennis champion",
         "the basketball coach", "the visiting side", "the marathon runner", "the cricket captain"],
        ["won", "lost", "scored twice in", "trained hard for", "was sent off during",
         "celebrated after", "dominated", "came back to win"],
        ["the championship final", "the derby match", "the league game", "the semi-final",
         "the world cup qualifier", "the relay race", "the penalty shootout", "the season opener"],
        ["in front of a roaring crowd", "in the last minute of extra time",
         "after a controversial referee decision", "with a stunning goal",
         "despite an injured ankle", "to top the league table"]),
    "weather": (
        ["a cold front", "the storm system", "heavy rain", "a thick fog", "the heatwave",
         "strong winds", "a blizzard", "the thunderstorm"],
        ["swept across", "flooded", "settled over", "battered", "moved towards", "brought hail to",
         "froze", "lingered over"],
        ["the coastal towns", "the northern valleys", "the mountain passes", "the river delta",
         "the city centre", "the farmland", "the eastern plains", "the harbour"],
        ["with temperatures dropping below zero", "as forecasters issued a warning",
         "bringing gusts of ninety kilometres per hour", "with more showers expected tomorrow",
         "under dark cloudy skies", "as the barometer fell sharply"]),
    "cooking": (
        ["the chef", "my grandmother", "the pastry cook", "our baker", "the home cook",
         "the sous chef", "a food blogger", "the kitchen team"],
        ["simmered", "baked", "roasted", "seasoned", "whisked", "sauteed", "marinated", "glazed"],
        ["the tomato sauce", "a loaf of sourdough bread", "the garlic butter chicken",
         "the onion soup", "a chocolate cake", "the vegetable stir fry", "the pasta dough",
         "the lemon tart"],
        ["with fresh basil and olive oil", "for forty minutes in a hot oven",
         "with a pinch of salt and pepper", "until golden and crispy", "over a low flame",
         "with a spoonful of honey"]),
    "finance": (
        ["the central bank", "investors", "the hedge fund", "the stock market",
         "the bank's shareholders", "the finance minister", "analysts", "the pension fund"],
        ["raised interest rates on", "sold shares of", "invested heavily in", "reported losses on",
         "bought bonds from", "cut the dividend of", "downgraded", "borrowed money from"],
        ["the mortgage lenders", "the tech stocks", "the government bonds",
         "the quarterly earnings", "the currency market", "the savings accounts",
         "the credit portfolio", "the loan repayments"],
        ["as inflation climbed to four percent", "after the quarterly earnings report",
         "while the dollar weakened", "amid fears of a recession", "as the share price tumbled",
         "to cut the budget deficit"]),
    "medicine": (
        ["the doctor", "the surgeon", "the nurse", "the hospital", "the cardiologist",
         "the pharmacist", "the paediatrician", "the clinic"],
        ["prescribed antibiotics for", "operated on", "diagnosed", "vaccinated",
         "treated the infection of", "monitored the blood pressure of", "examined", "admitted"],
        ["the patient", "the elderly man with pneumonia", "the child with a fever",
         "the diabetic woman", "the injured worker", "the patients in the ward",
         "the recovering patient", "the patient with asthma"],
        ["after the blood test results came back", "with a course of medication",
         "before the surgery", "in the emergency room", "following the scan of the lungs",
         "with a prescription for painkillers"]),
    "travel": (
        ["the tourists", "our tour guide", "the backpackers", "the airline",
         "the cruise passengers", "my family", "the travel agent", "the hotel guests"],
        ["booked a flight to", "checked into a hotel in", "explored", "took a train across",
         "went sightseeing in", "flew to", "hiked through", "planned a holiday in"],
        ["the old town of Lisbon", "the islands of Greece", "Kyoto", "the Scottish highlands",
         "the beaches of Thailand", "Paris", "the national park", "the capital of Peru"],
        ["with their passports and luggage", "after a long layover at the airport",
         "on a budget backpacking trip", "with a guided tour of the museums",
         "during the summer holidays", "using a cheap rail pass"]),
}
OPENERS = ["", "yesterday ", "I read that ", "according to the news, ", "apparently ",
           "my friend told me that "]
TIMES = ["", " on Monday", " last weekend", " this morning", " again", " earlier today"]
TEMPLATES = ["{O}{s} {a} {o}{t}.", "{O}{s} {a} {o} {d}.", "{d}, {s} {a} {o}.",
             "did you hear that {s} {a} {o}{t}?", "{O}{s} {a} {o}{t} {d}."]


def class_counts(total: int, k: int = len(CLASSES), ratio: float = IMBALANCE) -> list[int]:
    """Geometric class sizes summing to ``total`` (largest remainder), each at least 1."""
    w = [ratio ** (-i / (k - 1)) for i in range(k)]
    raw = [total * x / sum(w) for x in w]
    counts = [max(1, int(r)) for r in raw]
    by_remainder = sorted(range(k), key=lambda i: int(raw[i]) - raw[i])
    for i in by_remainder[:max(0, total - sum(counts))]:
        counts[i] += 1
    return counts


def _sentence(rng: random.Random, label: int) -> str:
    subj, act, obj, det = VOCAB[CLASSES[label]]
    o_src = obj
    if rng.random() < HARD_FRACTION:       # hard: object and detail from another class
        other = rng.choice([c for c in range(len(CLASSES)) if c != label])
        _, _, o_src, det = VOCAB[CLASSES[other]]
    text = rng.choice(TEMPLATES).format(O=rng.choice(OPENERS), s=rng.choice(subj),
                                        a=rng.choice(act), o=rng.choice(o_src),
                                        t=rng.choice(TIMES), d=rng.choice(det))
    return text[0].upper() + text[1:]


def make_synthetic(seed: int = 0, n_train: int = 2400) -> LoadedData:
    """Generate the corpus: train ``n_train``, dev 400, test 600 samples."""
    rng = random.Random(f"hamr-synthetic-{seed}")   # str seeds hash with sha512: stable
    seen: set[str] = set()
    splits = {}
    for name, size in (("train", n_train), ("dev", DEV_SIZE), ("test", TEST_SIZE)):
        labels = [c for c, n in enumerate(class_counts(size)) for _ in range(n)]
        rng.shuffle(labels)
        records = []
        for label in labels:
            text = _sentence(rng, label)
            while text in seen:              # keep splits disjoint and samples distinct
                text = _sentence(rng, label)
            seen.add(text)
            records.append({"text": text, "label": label})
        splits[name] = records
    return LoadedData("cls", list(CLASSES), [], splits["train"], splits["dev"], splits["test"],
                      f"synthetic(seed={seed}, n_train={n_train})", [])
