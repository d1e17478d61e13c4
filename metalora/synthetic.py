"""The built-in synthetic e-commerce scenario suite: generated, deterministic by seed, no download.

Four families of few-shot text-classification scenarios, each scenario a small `DatasetDict` with
splits ``train``, ``dev`` and ``test``:

* **sentiment** -- product reviews, binary negative/positive. Every product domain has its own aspect
  vocabulary, and some scenarios label by a hidden star rating with different thresholds (as in the
  Amazon ARSC benchmark: the same kind of text is positive above 2 stars in one scenario, above 4 in
  another).
* **categorisation** -- product listings, N-way. Every marketplace has its own taxonomy (different
  category sets and granularity, different currency).
* **purchase** -- two text columns, a user profile and an item listing; binary bought/not bought.
  Every user segment has its own buying rule (students buy cheap study gear, new parents buy baby
  items, gamers buy gear for the platform they own, bargain hunters buy big discounts...).
* **fraud** -- transaction / review / return logs with rare positives (5-10 %). Every market has its
  own fraud pattern (bulk gift cards from new accounts, billing/shipping country mismatch, fake
  5-star review bursts, account takeover, refund abuse).

Texts come from a small template grammar (`_fill`): ``{a|b|c}`` picks an alternative, ``{3-12}``
an integer, ``{slot}`` a phrase from a named list; alternatives nest. Generation uses only
``random.Random`` seeded with ``zlib.crc32`` of the scenario name, the seed and the split, so the
same ``(name, seed)`` gives identical data in every process.
"""
from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from metalora.errors import DataError

if TYPE_CHECKING:  # pragma: no cover
    import datasets

__all__ = [
    "GeneratorSpec",
    "GENERATORS",
    "DEFAULT_SIZES",
    "heldout_names",
    "train_names",
    "generate",
]

DEFAULT_SIZES: dict[str, int] = {"train": 240, "dev": 60, "test": 200}
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_METRICS = {
    "binary": ("accuracy", "macro_f1", "auroc"),
    "multiclass": ("accuracy", "macro_f1"),
    "rare_positive": ("pr_auc", "auroc", "macro_f1"),
}


@dataclass(frozen=True)
class GeneratorSpec:
    """What one synthetic scenario is: its columns, labels, metrics and what decides the label."""

    name: str
    family: str
    task_type: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    metrics: tuple[str, ...]
    description: str
    heldout: bool


# ---------------------------------------------------------------------------------------------
# Template grammar
# ---------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(\d+)-(\d+)")
Slots = dict[str, Sequence[str]]
_Builder = Callable[[random.Random, str], dict[str, str]]  # (rng, label name) -> text columns


def _fill(rng: random.Random, template: str, slots: Slots | None = None) -> str:
    """Expand ``{a|b}``, ``{3-12}`` and ``{slot}`` (innermost first) until nothing is left; tidy up."""
    return _tidy(_expand(rng, template, slots))


def _frag(rng: random.Random, template: str, slots: Slots | None = None) -> str:
    """Like `_fill` but for a fragment inside a longer text: no capitalisation or tidying."""
    return _expand(rng, template, slots)


def _expand(rng: random.Random, template: str, slots: Slots | None) -> str:
    def expand(match: re.Match[str]) -> str:
        body = match.group(1)
        if slots is not None and body in slots:
            return _expand(rng, rng.choice(slots[body]), slots)
        rm = _RANGE.fullmatch(body)
        if rm:
            return str(rng.randint(int(rm.group(1)), int(rm.group(2))))
        if "|" in body:
            return rng.choice(body.split("|"))
        raise KeyError(f"template slot {{{body}}} has no values")  # a bug in this file

    previous = None
    while previous != template:
        previous, template = template, _SLOT.sub(expand, template)
    return template


_SINGULAR = re.compile(r"\b1 (order|hour|day|year|month|week|minute|night|review|claim|request|attempt|"
                       r"previous order|refund claim|refund request|card attempt)s\b")


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = _SINGULAR.sub(r"1 \1", text)
    text = re.sub(r"\s+([,.;:!?)])", r"\1", text)
    text = re.sub(r"([.!?])\.", r"\1", text)
    text = re.sub(r",,+", ",", text)
    return text[:1].upper() + text[1:]


_TYPOS = {
    "the ": "teh ",
    "definitely": "definately",
    "received": "recieved",
    "really": "realy",
    "quality": "qualty",
    "though": "tho",
    "because": "bc",
    "recommend": "reccomend",
    "great": "grat",
}


def _noisy(rng: random.Random, text: str, p: float = 0.3) -> str:
    """Human noise for user-written text: a typo, lower case, missing or doubled punctuation."""
    if rng.random() >= p:
        return text
    kind = rng.randrange(5)
    if kind == 0:
        hits = [k for k in _TYPOS if k in text]
        if hits:
            k = rng.choice(hits)
            return text.replace(k, _TYPOS[k], 1)
        return text
    if kind == 1:
        return text.lower()
    if kind == 2:
        return text.rstrip(".!")
    if kind == 3:
        return text.replace("!", "!!", 1) if "!" in text else text.replace(".", "!", 1)
    return text.replace(". ", ".. ", 1)


def _price(rng: random.Random, lo: float, hi: float) -> float:
    """A plausible shelf price in [lo, hi]: ends in .99, .49, .95 or .00."""
    base = rng.uniform(lo, hi)
    whole = int(base) if base < 200 else int(base / 5) * 5 + rng.choice((4, 9))
    cents = rng.choice((0.99, 0.99, 0.49, 0.95, 0.0))
    return round(max(lo * 0.9, whole + cents), 2)


def _money(amount: float, currency: str = "$") -> str:
    if currency == "¥":
        return f"¥{int(round(amount, -1)):,}"
    if amount >= 1000:
        return f"{currency}{amount:,.2f}"
    return f"{currency}{amount:.2f}"


_CURRENCY_RATE = {"$": 1.0, "€": 0.92, "£": 0.79, "¥": 150.0}


# ---------------------------------------------------------------------------------------------
# Product catalogue (shared by categorisation, purchase and fraud)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Product:
    leaf: str
    name: str
    lo: float
    hi: float
    specs: tuple[str, ...]
    tags: frozenset[str] = frozenset()
    platform: str = ""  # for gaming gear tied to one console


def _p(leaf: str, name: str, lo: float, hi: float, *specs: str, tags: str = "", platform: str = "") -> _Product:
    return _Product(leaf, name, lo, hi, specs, frozenset(tags.split()), platform)


_CATALOG: tuple[_Product, ...] = (
    # audio
    _p("audio", "wireless earbuds", 19, 199, "{20-40}-hour battery with charging case", "Bluetooth 5.{0-3}",
       "IPX{4-7} sweat resistant", "active noise cancelling", "touch controls", tags="study"),
    _p("audio", "over-ear headphones", 29, 349, "{30-60}h playtime", "active noise cancelling",
       "memory-foam ear cushions", "foldable design", "built-in mic", tags="study"),
    _p("audio", "Bluetooth speaker", 15, 179, "{10-24}h battery", "IP67 waterproof", "{10-40}W stereo sound",
       "party mode pairing", "deep bass"),
    _p("audio", "soundbar", 79, 399, "Dolby Atmos", "wireless subwoofer", "HDMI eARC", "{2.1|3.1|5.1} channel"),
    _p("audio", "record player", 69, 299, "belt-driven turntable", "built-in speakers", "3-speed (33/45/78 RPM)",
       "Bluetooth output"),
    # computing
    _p("computing", "laptop", 399, 1599, "{8|16|32}GB RAM", "{256|512}GB SSD", "{13.3|14|15.6}-inch Full HD display",
       "backlit keyboard", "up to {8-14}h battery", tags="study"),
    _p("computing", "mechanical keyboard", 39, 149, "hot-swappable {red|brown|blue} switches", "RGB backlight",
       "compact 75% layout", "USB-C detachable cable"),
    _p("computing", "wireless mouse", 12, 79, "silent clicks", "{1600|2400|4000} DPI", "ergonomic shape",
       "18-month battery life", tags="study"),
    _p("computing", "USB-C hub", 19, 69, "{6|7|8}-in-1", "4K HDMI", "100W pass-through charging", "SD card reader",
       tags="study"),
    _p("computing", "external SSD", 49, 199, "{500GB|1TB|2TB}", "up to {1000|1050|2000}MB/s", "shock resistant",
       "USB 3.2 Gen 2"),
    _p("computing", "monitor", 129, 499, "{24|27|32}-inch IPS panel", "{75|144|165}Hz refresh rate",
       "height-adjustable stand", "{1440p|4K UHD} resolution", tags="study"),
    _p("computing", "laptop stand", 17, 59, "adjustable aluminium", "fits 10-17 inch laptops", "folds flat",
       "ventilated design", tags="study"),
    # phones
    _p("phones", "smartphone", 149, 1099, "{64|128|256}GB storage", "{48|50|108}MP triple camera",
       "{6.1|6.5|6.7}-inch OLED screen", "{4500|5000}mAh battery", "unlocked, 5G"),
    _p("phones", "phone case", 8, 39, "shockproof", "MagSafe compatible", "slim fit", "raised camera lip",
       "clear anti-yellowing"),
    _p("phones", "screen protector", 6, 19, "tempered glass, {2|3}-pack", "9H hardness", "bubble-free install kit"),
    _p("phones", "fast charger", 12, 45, "{20|30|65}W USB-C PD", "GaN technology", "foldable plug", "dual port"),
    _p("phones", "power bank", 15, 59, "{10000|20000|26800}mAh", "charges 3 devices at once", "LED display",
       "airline approved", tags="study"),
    # smart home
    _p("smart_home", "smart plug", 9, 29, "works with Alexa and Google Home", "energy monitoring", "no hub required",
       "{2|4}-pack"),
    _p("smart_home", "video doorbell", 59, 199, "1080p HD video", "two-way talk", "motion alerts", "night vision"),
    _p("smart_home", "smart thermostat", 99, 249, "learns your schedule", "remote control via app",
       "energy-saving reports"),
    _p("smart_home", "robot vacuum", 149, 599, "{2000|2700|4000}Pa suction", "app-controlled", "self-charging",
       "lidar mapping", tags="home"),
    _p("smart_home", "smart light bulb", 8, 39, "16 million colours", "dimmable", "voice control", "{2|4}-pack"),
    _p("smart_home", "indoor security camera", 25, 149, "2K resolution", "pan and tilt", "person detection",
       "local SD storage"),
    # gaming
    _p("gaming", "PS5 console", 449, 549, "825GB SSD", "DualSense controller included", "4K 120Hz gaming",
       tags="gaming", platform="PS5"),
    _p("gaming", "Xbox Series X console", 449, 549, "1TB SSD", "4K gaming at up to 120 FPS", "Game Pass ready",
       tags="gaming", platform="Xbox"),
    _p("gaming", "Nintendo Switch OLED", 299, 349, "7-inch OLED screen", "64GB storage", "dock included",
       tags="gaming", platform="Switch"),
    _p("gaming", "DualSense wireless controller", 59, 79, "haptic feedback", "adaptive triggers", "for PS5",
       tags="gaming", platform="PS5"),
    _p("gaming", "Xbox wireless controller", 49, 69, "textured grip", "Bluetooth", "for Xbox Series X and S",
       tags="gaming", platform="Xbox"),
    _p("gaming", "Pro controller for Switch", 49, 69, "HD rumble", "40-hour battery", "for Nintendo Switch",
       tags="gaming", platform="Switch"),
    _p("gaming", "gaming headset", 29, 199, "7.1 surround sound", "detachable noise-cancelling mic",
       "works with PC, PS5 and Xbox", "RGB lighting", tags="gaming"),
    _p("gaming", "gaming chair", 129, 399, "lumbar pillow", "4D armrests", "reclines to 155 degrees",
       "PU leather", tags="gaming"),
    _p("gaming", "RGB gaming mouse", 19, 89, "{12000|16000|26000} DPI sensor", "{6|8|11} programmable buttons",
       "ultralight {58|63|69}g shell", tags="gaming"),
    _p("gaming", "open-world RPG for PS5", 29, 69, "standard edition", "physical disc", "rated M",
       tags="gaming", platform="PS5"),
    _p("gaming", "racing game for Xbox", 19, 69, "digital code", "online multiplayer", "rated E",
       tags="gaming", platform="Xbox"),
    _p("gaming", "party game for Switch", 39, 59, "up to 4 players", "physical cartridge", "rated E",
       tags="gaming", platform="Switch"),
    # cookware
    _p("cookware", "cast iron skillet", 19, 79, "pre-seasoned", "{10|12}-inch", "oven safe to 500°F",
       "dual pour spouts", tags="home"),
    _p("cookware", "non-stick frying pan set", 29, 119, "{2|3}-piece", "PFOA-free coating", "induction compatible",
       "stay-cool handles", tags="home"),
    _p("cookware", "stainless steel saucepan", 24, 89, "{2|3}-quart", "tri-ply base", "glass lid",
       "dishwasher safe", tags="home"),
    _p("cookware", "enameled dutch oven", 49, 299, "{5|6|7}-quart", "chip-resistant enamel", "tight-fitting lid",
       tags="home"),
    _p("cookware", "chef's knife", 19, 149, "8-inch German steel blade", "full tang", "ergonomic handle",
       "comes razor sharp", tags="home"),
    _p("cookware", "bamboo cutting board set", 15, 45, "{2|3}-piece", "juice groove", "knife-friendly surface",
       tags="home"),
    # small appliances
    _p("small_appliances", "air fryer", 49, 199, "{4|5.5|6}-quart basket", "{6|8}-in-1 presets",
       "dishwasher-safe basket", "uses 85% less oil", tags="home"),
    _p("small_appliances", "blender", 29, 179, "{1000|1200|1500}W motor", "{48|64}oz jar", "crushes ice",
       "{3|5}-speed", tags="home"),
    _p("small_appliances", "espresso machine", 99, 599, "15-bar pump", "steam wand for lattes",
       "built-in grinder", tags="home"),
    _p("small_appliances", "electric kettle", 19, 79, "1.7L", "boils in under 4 minutes", "auto shut-off",
       "temperature presets", tags="home study"),
    _p("small_appliances", "2-slice toaster", 19, 69, "extra-wide slots", "{6|7}-shade settings", "bagel mode",
       tags="home"),
    _p("small_appliances", "rice cooker", 25, 129, "{3|6|10}-cup", "keep-warm function", "steamer basket",
       tags="home study"),
    # furniture
    _p("furniture", "bookshelf", 39, 199, "5-tier", "engineered wood", "easy assembly", "{oak|walnut|white} finish",
       tags="home"),
    _p("furniture", "office chair", 79, 349, "mesh back", "adjustable lumbar support", "360-degree swivel",
       tags="home study"),
    _p("furniture", "coffee table", 59, 299, "lift-top", "hidden storage", "solid wood legs", tags="home"),
    _p("furniture", "standing desk", 159, 499, "electric height adjustment", "{48|55|63}-inch top",
       "memory presets", tags="home"),
    _p("furniture", "shoe rack", 19, 69, "{3|4|5}-tier", "holds {12-30} pairs", "metal frame", tags="home"),
    # decor
    _p("decor", "throw pillow covers", 12, 39, "set of {2|4}", "18x18 inch", "velvet", "hidden zipper",
       tags="home"),
    _p("decor", "framed wall art print", 19, 129, "{16x20|24x36} inch", "ready to hang", "abstract botanical",
       tags="home"),
    _p("decor", "scented candle", 9, 45, "{8|14}oz soy wax", "{40-80}-hour burn time", "cotton wick",
       tags="home"),
    _p("decor", "LED desk lamp", 15, 89, "touch dimmer", "USB charging port", "eye-care light",
       "5 colour modes", tags="home study"),
    _p("decor", "area rug", 39, 249, "{5x7|8x10} ft", "non-shedding", "machine washable", tags="home"),
    # tops
    _p("tops", "crew neck t-shirt", 9, 35, "100% cotton", "{3|5}-pack", "pre-shrunk", "sizes XS-3XL"),
    _p("tops", "pullover hoodie", 24, 79, "fleece lined", "kangaroo pocket", "relaxed fit", "drawstring hood"),
    _p("tops", "linen button-down shirt", 24, 89, "breathable linen blend", "regular fit", "roll-up sleeves"),
    _p("tops", "merino knit sweater", 39, 149, "100% merino wool", "ribbed cuffs", "crew neck"),
    _p("tops", "silk blouse", 29, 119, "V-neck", "relaxed fit", "machine washable"),
    _p("tops", "polo shirt", 15, 59, "pique cotton", "slim fit", "moisture-wicking"),
    # bottoms
    _p("bottoms", "slim-fit jeans", 29, 99, "stretch denim", "5-pocket style", "{28|30|32|34}-inch inseam"),
    _p("bottoms", "chino trousers", 25, 79, "wrinkle resistant", "flat front", "tapered leg"),
    _p("bottoms", "jogger pants", 19, 59, "elastic waistband", "zip pockets", "tapered fit"),
    _p("bottoms", "pleated midi skirt", 22, 69, "elastic waist", "flowy chiffon", "lined"),
    _p("bottoms", "cargo shorts", 19, 49, "8 pockets", "ripstop cotton", "relaxed fit"),
    # footwear
    _p("footwear", "running shoes", 49, 179, "breathable mesh upper", "responsive foam midsole",
       "{6|8|10}mm drop", tags="fitness"),
    _p("footwear", "leather ankle boots", 59, 219, "genuine leather", "side zip", "cushioned insole"),
    _p("footwear", "canvas sneakers", 25, 75, "vulcanized rubber sole", "lace-up", "classic low-top"),
    _p("footwear", "slide sandals", 12, 49, "contoured footbed", "quick-dry", "non-slip sole"),
    _p("footwear", "suede loafers", 45, 149, "penny strap", "leather lining", "slip-on"),
    # accessories
    _p("accessories", "leather wallet", 15, 79, "RFID blocking", "{6|8|10} card slots", "slim bifold"),
    _p("accessories", "laptop backpack", 25, 129, "fits 15.6-inch laptops", "water-resistant", "USB charging port",
       "{20|25|30}L", tags="study"),
    _p("accessories", "polarized sunglasses", 12, 159, "UV400 protection", "lightweight frame", "hard case included"),
    _p("accessories", "wool scarf", 15, 69, "soft lambswool", "{70|80}-inch long", "fringed ends"),
    _p("accessories", "baseball cap", 9, 35, "adjustable strap", "washed cotton", "curved brim"),
    _p("accessories", "analog wristwatch", 39, 299, "sapphire crystal", "leather strap", "water resistant to 50m"),
    # fitness
    _p("fitness", "yoga mat", 15, 79, "{6|8}mm thick", "non-slip texture", "carrying strap", tags="fitness"),
    _p("fitness", "adjustable dumbbells", 79, 399, "{5-25|10-52} lb range", "quick-change dial", "pair",
       tags="fitness"),
    _p("fitness", "resistance bands set", 12, 39, "5 levels", "door anchor", "handles and ankle straps",
       tags="fitness"),
    _p("fitness", "foam roller", 12, 45, "high-density EVA", "{13|18|24}-inch", "textured surface", tags="fitness"),
    _p("fitness", "kettlebell", 25, 99, "cast iron", "{8|12|16|20}kg", "flat base", tags="fitness"),
    _p("fitness", "whey protein powder", 24, 69, "{2|5} lb tub", "{24|25}g protein per scoop",
       "{chocolate|vanilla|strawberry} flavour", tags="fitness"),
    # outdoor
    _p("outdoor", "camping tent", 49, 299, "{2|4|6}-person", "waterproof rainfly", "sets up in {3-10} minutes"),
    _p("outdoor", "sleeping bag", 29, 149, "rated to {20|30|40}°F", "compression sack", "mummy shape"),
    _p("outdoor", "hiking daypack", 29, 119, "{20|28|35}L", "hydration compatible", "rain cover"),
    _p("outdoor", "rechargeable headlamp", 12, 49, "{300|600|1000} lumens", "red light mode", "USB-C rechargeable"),
    _p("outdoor", "insulated water bottle", 15, 45, "{24|32|40}oz", "keeps cold 24 hours", "leak-proof lid",
       tags="fitness study"),
    _p("outdoor", "trekking poles", 25, 99, "carbon fibre", "cork grips", "collapsible"),
    # toys
    _p("toys", "building blocks set", 19, 129, "{500|800|1200} pieces", "ages {6|8}+", "compatible with major brands"),
    _p("toys", "plush teddy bear", 12, 49, "{12|16|20}-inch", "super soft", "machine washable", tags="baby"),
    _p("toys", "remote control car", 25, 99, "1:{14|16|18} scale", "{20|25|30} km/h", "rechargeable battery"),
    _p("toys", "wooden train set", 29, 99, "{50|80|100} pieces", "ages 3+", "compatible with major brands"),
    _p("toys", "STEM robot kit", 35, 149, "coding app included", "ages {8|10}+", "{12|15}-in-1 builds"),
    _p("toys", "dollhouse", 49, 199, "3 storeys", "{15|20|25} furniture pieces", "working lights"),
    # board games
    _p("board_games", "strategy board game", 25, 69, "{2-4|2-5|3-6} players", "{45|60|90}-minute playtime",
       "ages {10|12|14}+"),
    _p("board_games", "jigsaw puzzle", 12, 35, "{500|1000|1500} pieces", "thick recycled board", "poster included"),
    _p("board_games", "party card game", 12, 29, "{300|500} cards", "for {4-8|3-10} players", "ages 17+"),
    _p("board_games", "wooden chess set", 25, 99, "weighted pieces", "folding board", "storage slots"),
    # skincare
    _p("skincare", "vitamin C serum", 12, 59, "20% vitamin C", "with hyaluronic acid", "1 fl oz"),
    _p("skincare", "daily moisturiser", 9, 49, "fragrance-free", "for sensitive skin", "SPF 30"),
    _p("skincare", "mineral sunscreen", 9, 35, "SPF 50", "reef safe", "no white cast", tags="baby"),
    _p("skincare", "gentle foaming cleanser", 8, 29, "pH balanced", "with ceramides", "{5|8|12}oz"),
    _p("skincare", "retinol night cream", 15, 69, "0.{3|5}% retinol", "with niacinamide", "1.7oz"),
    # makeup
    _p("makeup", "volumizing mascara", 7, 32, "smudge-proof", "waterproof", "{black|brown-black}"),
    _p("makeup", "matte liquid lipstick", 6, 29, "16-hour wear", "transfer-proof", "{12|20} shades"),
    _p("makeup", "eyeshadow palette", 12, 59, "{12|18|35} shades", "matte and shimmer", "highly pigmented"),
    _p("makeup", "liquid foundation", 9, 49, "medium coverage", "{30|40} shades", "oil-free"),
    # haircare
    _p("haircare", "ionic hair dryer", 25, 199, "{1800|1875}W", "3 heat settings", "diffuser attachment"),
    _p("haircare", "ceramic flat iron", 19, 129, "1-inch plates", "heats up in 30 seconds", "auto shut-off"),
    _p("haircare", "sulfate-free shampoo", 7, 35, "{10|16|33}oz", "for curly hair", "argan oil"),
    _p("haircare", "hair repair oil", 9, 45, "{1|2|3.4}oz", "heat protection", "frizz control"),
    # baby
    _p("baby", "compact travel stroller", 99, 499, "one-hand fold", "reclining seat", "fits in overhead bins",
       tags="baby"),
    _p("baby", "video baby monitor", 39, 249, "{4.3|5}-inch screen", "night vision", "two-way audio",
       "temperature sensor", tags="baby"),
    _p("baby", "diapers", 19, 59, "size {1|2|3|4}", "{96|128|168} count", "12-hour leak protection", tags="baby"),
    _p("baby", "bottle warmer", 19, 69, "warms in {3|4|5} minutes", "BPA-free", "auto shut-off", tags="baby"),
    _p("baby", "ergonomic baby carrier", 39, 199, "newborn to toddler", "breathable mesh",
       "{4|6} carry positions", tags="baby"),
    _p("baby", "baby safety gate", 29, 89, "pressure mounted", "walk-through door", "fits {29-38|28-40} inch openings",
       tags="baby"),
    _p("baby", "convertible high chair", 49, 199, "adjustable height", "removable tray", "grows with baby",
       tags="baby"),
    # pet
    _p("pet", "orthopedic dog bed", 29, 149, "memory foam", "washable cover", "size {M|L|XL}", tags="pet"),
    _p("pet", "cat tree", 39, 179, "{4|5|6} levels", "sisal scratching posts", "cozy condo", tags="pet"),
    _p("pet", "no-pull dog harness", 15, 49, "reflective straps", "front clip", "size {S|M|L}", tags="pet"),
    _p("pet", "automatic pet feeder", 39, 129, "{4|6}L hopper", "app scheduling", "voice recorder", tags="pet"),
    _p("pet", "clumping cat litter", 12, 39, "{20|25|40} lb", "unscented", "99% dust-free", tags="pet"),
    _p("pet", "dog chew toy pack", 9, 35, "{6|8|10}-pack", "for aggressive chewers", "natural rubber", tags="pet"),
    # stationery
    _p("stationery", "spiral notebooks", 6, 25, "{3|5}-pack", "college ruled", "{70|100|120} sheets each",
       tags="study"),
    _p("stationery", "gel pens", 5, 19, "{12|24|36}-pack", "0.5mm fine point", "quick-dry ink", tags="study"),
    _p("stationery", "highlighter set", 4, 15, "{6|10|12} pastel colours", "chisel tip", "no bleed", tags="study"),
    _p("stationery", "academic planner", 8, 29, "July-June", "weekly and monthly views", "hardcover",
       tags="study"),
    _p("stationery", "scientific calculator", 12, 129, "{240|417|552} functions", "solar and battery powered",
       "exam approved", tags="study"),
    _p("stationery", "sticky notes", 4, 14, "{12|24} pads", "3x3 inch", "super sticky", tags="study"),
)

_BY_LEAF: dict[str, tuple[_Product, ...]] = {}
for _prod in _CATALOG:
    _BY_LEAF.setdefault(_prod.leaf, ())
    _BY_LEAF[_prod.leaf] += (_prod,)

_BRANDS = (
    "Norvik", "Lumora", "Kestrel", "BrightPath", "Zentro", "Halden & Co", "Aurelle", "Maple Row", "Vantix",
    "Pinecrest", "Solvane", "Orbiq", "Tidewell", "Copperline", "Fjordic", "Emberly", "Quillo",
    "Sundial", "Ravenna", "Bluefin", "Okapi", "Trailmark", "Wrenfield", "Nimbus", "Cobalt Lane",
)
_ADJECTIVES = (
    "Premium", "Compact", "Lightweight", "Classic", "Upgraded 2024", "Heavy-Duty", "Eco-Friendly", "Ergonomic",
    "Portable", "Professional", "Slim", "Deluxe", "Everyday", "Essential", "New", "Pro", "Ultra", "Original",
)
_PITCHES = (
    "Free returns within 30 days.", "Ships in 1-2 business days.", "Perfect gift for {him|her|kids|mom|dad}.",
    "Satisfaction guaranteed.", "Bestseller in its category.", "{1|2|3}-year warranty.",
    "Over {2|5|10|12},000 happy customers.", "Limited stock.", "Backed by our lifetime support.",
    "Gift box packaging.", "Trusted by {2|3|4|8},000+ buyers.", "", "", "",
)


def _listing(rng: random.Random, prod: _Product, price: float, currency: str = "$", *, pitch: bool = True,
             discount: int = 0) -> str:
    """A short product listing: brand, adjective, product, two or three specs, pitch, price."""
    specs = rng.sample(prod.specs, k=min(len(prod.specs), rng.choice((2, 2, 3))))
    spec_txt = ", ".join(_frag(rng, s) for s in specs)
    head = f"{rng.choice(_BRANDS)} {rng.choice(_ADJECTIVES)} {prod.name}"
    local = price * _CURRENCY_RATE[currency]
    if discount:
        was = local / (1 - discount / 100)
        price_txt = f"{_money(local, currency)} (was {_money(was, currency)}, -{discount}%)"
    else:
        price_txt = _money(local, currency)
    style = rng.randrange(3)
    if style == 0:
        text = f"{head} - {spec_txt}. {price_txt}."
    elif style == 1:
        text = f"{head} | {spec_txt} | {price_txt}"
    else:
        text = f"{head}, {spec_txt}, now {price_txt}."
    if pitch:
        text += " " + _fill(rng, rng.choice(_PITCHES))
    return _tidy(text)


# ---------------------------------------------------------------------------------------------
# Sentiment: reviews, with a hidden 1-5 star rating
# ---------------------------------------------------------------------------------------------

# Each product is "name#tag#tag"; an aspect "[tag tag]Sentence" only appears in reviews of products that
# share a tag with it, an untagged aspect in any review of the domain.
_SENT_DOMAINS: dict[str, dict[str, tuple[str, ...]]] = {
    "kitchen": dict(
        product=("cast iron skillet#pan", "frying pan#pan", "dutch oven#pan", "chef's knife#knife",
                 "knife set#knife", "stand mixer#appliance", "air fryer#appliance#fryer", "blender#appliance#jar",
                 "toaster#appliance", "electric kettle#appliance#kettle", "food processor#appliance#jar",
                 "rice cooker#appliance"),
        context=("Bought it to replace my old one {2-10} {weeks|months} ago.", "I cook most evenings.",
                 "Use it {daily|a few times a week|every weekend}.", "Got the {black|red|grey|cream} one.",
                 "Had it for {about {3-9} months|two weeks|half a year} now."),
        pos=("Feels solid and well made.", "Cleans up in seconds.", "Does exactly what it promises.",
             "Still works like new after {3-14} months of daily use.",
             "[pan]It heats evenly, no more burnt spots in the middle.",
             "[pan]The coating is still perfect after {3-14} months.",
             "[pan]The handle stays cool even on high heat.", "[pan]Eggs slide right off, no oil needed.",
             "[pan]Goes from stove to oven without a problem.",
             "[knife]The blade holds an edge really well, slices tomatoes paper thin.",
             "[knife]Feels perfectly balanced in the hand.", "[knife]Still razor sharp after {2-6} months.",
             "[appliance]Quiet enough to use at 6am without waking anyone.",
             "[appliance]Powerful motor, {cuts my prep time in half|handles everything I throw at it}.",
             "[appliance]The controls are simple and intuitive.",
             "[fryer]Fries come out crispy in about {12-18} minutes.",
             "[jar]Crushes ice for smoothies without any struggle.",
             "[kettle]Boils a full jug in under {3|4} minutes."),
        neg=("It broke after {2-6} weeks.", "Cheap materials, it feels flimsy.",
             "Customer service refused to replace it.",
             "[pan]The non-stick coating started peeling after {2-6} weeks.",
             "[pan]The handle gets scorching hot, burned my hand twice.", "[pan knife]It rusted after the first wash.",
             "[pan]It warps on the stove, burnt center and raw edges.", "[pan]The lid doesn't fit properly.",
             "[knife]The blade went dull within a month.", "[knife]The handle came loose after a few weeks.",
             "[appliance]The motor smells like burning plastic after {2|3} minutes.",
             "[appliance]It stopped working after {5-20} uses.",
             "[fryer]The thermostat is way off, everything comes out half raw.",
             "[jar kettle]It leaks all over the counter.",
             "[jar]The plastic jar cracked the second time I used it.",
             "[appliance]It's as loud as a jet engine."),
        gripe=("It's heavier than I expected.", "The manual is useless, had to watch a video.",
               "[appliance]It takes up a lot of counter space.", "[appliance]The cord could be longer.",
               "[pan jar]The lid is a bit fiddly.", "[appliance]It's a little loud on the highest setting.",
               "[knife]Hand wash only, which is a pain.", "[pan]It needs re-seasoning more often than I'd like."),
        plus=("It looks nice on the counter.", "At least it was cheap.", "The colour is lovely.",
              "Packaging was sturdy."),
    ),
    "electronics": dict(
        product=("wireless earbuds#audio#anc#buds", "Bluetooth speaker#audio", "noise-cancelling headphones#audio#anc",
                 "laptop#computer#screen", "tablet#computer#screen", "gaming monitor#screen", "webcam#camera",
                 "phone charger#power", "power bank#power", "external hard drive#storage", "smartwatch#watch#screen"),
        context=("Had it for {about {3-9} months|two weeks|half a year} now.",
                 "Use it {daily|for work|on my commute}.", "Upgraded from a {2|3|5}-year-old model.",
                 "Bought it for my {son|daughter|dad|partner}."),
        pos=("Setup was painless.", "Build quality feels premium.", "Works perfectly out of the box.",
             "[audio]The sound is crisp with real bass, even at low volume.",
             "[audio]Pairing took ten seconds and it never drops the connection.",
             "[audio]Battery easily lasts {2|3} full days.",
             "[anc]Noise cancelling blocks out the whole train commute.",
             "[anc camera]The mic quality got compliments on every call.",
             "[computer]Boots in seconds and handles {20-40} browser tabs without a hiccup.",
             "[screen]The screen is bright and sharp, colours pop.",
             "[camera]The picture is sharp even in a dim room.",
             "[power]Charges my phone from {5|10|15}% to full in under an hour.",
             "[power]Stays cool even when fast charging.",
             "[storage]Transfers {50|80|120}GB in a couple of minutes.",
             "[storage]Compact enough to live in my laptop bag.",
             "[watch]Tracks my runs and sleep accurately.", "[watch]The battery lasts {5-10} days."),
        neg=("The firmware update bricked it.", "It overheats and shuts down.", "Stopped working after {2-5} weeks.",
             "Support just sent me a canned reply.",
             "[audio]It keeps disconnecting from Bluetooth every few minutes.",
             "[audio]Sound is tinny and distorts at half volume.",
             "[buds]The left earbud stopped charging after a month.",
             "[audio watch]The battery dies after {2-4} hours, nowhere near what's advertised.",
             "[screen]Dead pixel right in the middle of the screen out of the box.",
             "[computer]Lags constantly, even with only {2|3} apps open.",
             "[camera]The image is grainy and washed out.",
             "[power]The charging port stopped working after {2-5} weeks.",
             "[power]Charges slower than my old 5W brick.",
             "[storage]It randomly disconnects mid-transfer.", "[storage]Lost all my files after {2|3} weeks.",
             "[watch]The step count is wildly off.", "[watch]The strap snapped within a month."),
        gripe=("The charging cable is annoyingly short.", "No power adapter in the box.",
               "The app asks for way too many permissions.", "It runs a little warm under load.",
               "[buds anc]The touch controls are a bit too sensitive.", "[computer screen]It's a fingerprint magnet."),
        plus=("It looks sleek.", "The packaging was nice.", "At least the price was low.",
              "The buttons feel clicky."),
    ),
    "apparel": dict(
        product=("hoodie#top#sleeves", "wool sweater#top#sleeves", "t-shirt#top#summer",
                 "linen shirt#top#summer#sleeves", "pair of jeans#bottom#pockets", "pair of leggings#bottom#sport",
                 "pair of running shorts#bottom#sport#summer",
                 "summer dress#summer", "rain jacket#outer#sleeves#pockets", "winter coat#outer#sleeves#pockets"),
        context=("I'm {5'4|5'7|5'10|6'1} and usually wear a {S|M|L|XL}.",
                 "Ordered the {navy|black|olive|beige|red} one.", "Bought it for {a trip|work|the winter|running}.",
                 "Worn it about {5-20} times so far."),
        pos=("Fits true to size, I ordered my usual {S|M|L} and it's perfect.",
             "Washed it {3-10} times and it hasn't shrunk or faded.",
             "The stitching is neat and the seams feel strong.", "The colour is exactly like the photos.",
             "The cut is flattering and the length is just right.",
             "[top bottom summer]The fabric is soft and thick, not see-through at all.",
             "[outer]Kept me completely dry in a downpour.", "[outer]Warm enough for {-5|-10|-15}°C mornings.",
             "[outer]The zip runs smoothly and the hood actually stays up.",
             "[summer]Breathable enough for hot summer days.",
             "[sport]The waistband stays put, even on long runs.",
             "[bottom]Enough stretch to sit comfortably all day."),
        neg=("Runs {two|three} sizes small, I couldn't even get it on.",
             "It shrank a full size after the first wash.", "Seams started unravelling after {2|3} wears.",
             "The colour bled all over my other laundry.",
             "Looks nothing like the photos, the colour is completely off.",
             "[top bottom summer]The fabric is thin and scratchy, you can see right through it.",
             "[top bottom]Pilling everywhere after one week.",
             "[outer]Soaked through in light drizzle.", "[outer]The zipper broke the first time I used it.",
             "[sport]Goes see-through the moment you bend down.",
             "[bottom]The seam split on the second wear."),
        gripe=("It wrinkles easily.", "It arrived with a strong chemical smell that washed out.",
               "[sleeves]The sleeves are slightly long.", "[pockets sport]The pockets are a bit shallow.",
               "[bottom summer]It's a bit shorter than I'd like.", "[outer]It's bulkier than it looks."),
        plus=("The colour is pretty.", "It was on sale at least.", "It came neatly folded.",
              "The label says organic cotton, nice touch."),
    ),
    "toys": dict(
        product=("building set#build", "jigsaw puzzle#build", "wooden train set#build#wood",
                 "science kit#build#science",
                 "dollhouse#pretend#wood", "toy kitchen#pretend", "RC car#rc", "ride-on scooter#rc",
                 "plush bunny#plush", "board game#game"),
        context=("Bought it for my {nephew|granddaughter|son|daughter}'s {third|fourth|fifth|sixth|seventh} birthday.",
                 "Christmas present for the kids.", "My {twins|kids|grandkids} are {3-9} and {5-11}."),
        pos=("My {4|5|6|7|8}-year-old has played with it every day since.",
             "Kept both kids busy for hours, no screens needed.",
             "[rc build pretend]Sturdy enough to survive being thrown down the stairs.",
             "[wood pretend]Safe rounded edges and non-toxic paint.",
             "[build]The pieces fit together perfectly and nothing was missing.",
             "[build pretend]Instructions were clear enough for my {6|7|8}-year-old to follow alone.",
             "[science]Great educational value, {she|he} learned {basic coding|how circuits work} with it.",
             "[rc]Batteries last ages and it's surprisingly fast.",
             "[rc]Handles grass and gravel without getting stuck.",
             "[plush]So soft, {she|he} sleeps with it every night.",
             "[plush]Survived the washing machine {3-6} times.",
             "[game]The whole family was laughing all evening.",
             "[game]Easy rules, even grandma picked it up in five minutes."),
        neg=("Broke within {10|20|30} minutes of opening it.",
             "Way too small for the price, looks nothing like the box.",
             "My kids lost interest after {5|10} minutes.",
             "[build game]Pieces were missing and the instructions were unreadable.",
             "[wood]The paint started chipping right away, not something I want my toddler chewing.",
             "[rc]The remote stopped responding after a day.",
             "[rc]The battery dies after {5|8|10} minutes of play.",
             "[rc pretend]Sharp plastic edges, my son cut his finger.",
             "[pretend]It's so loud and there's no volume switch.",
             "[pretend]The doors fell off during assembly.",
             "[plush]The seams split and stuffing came out within a week.",
             "[plush]One eye came off, a choking hazard.",
             "[game]Confusing rules, we gave up halfway through.",
             "[game]The cards are flimsy and bent after one game."),
        gripe=("The box is huge for what's inside.", "[build pretend rc]Assembly took longer than expected.",
               "[rc pretend]It needs {4|6} AA batteries that aren't included.",
               "[pretend rc]Some stickers were a pain to apply.", "[plush]It sheds a little fluff.",
               "[game]Setup takes a while.", "[build]Some pieces are very small."),
        plus=("The colours are bright.", "It was cheap.", "The box looked nice for gifting.",
              "The kids liked the packaging."),
    ),
    "books": dict(
        product=("novel#fiction#read", "thriller#fiction#read", "fantasy novel#fiction#read", "mystery#fiction#read",
                 "graphic novel#fiction#read", "biography#nonfiction#read", "history book#nonfiction#read",
                 "memoir#nonfiction#read", "self-help book#nonfiction#read", "cookbook#cook"),
        context=("Read it {on holiday|for my book club|over a long weekend|on my commute}.",
                 "Picked it up after {a friend's recommendation|seeing it everywhere online|"
                 "loving the author's last book}.", "Bought the {paperback|hardcover|Kindle edition}."),
        pos=("[read]Couldn't put it down, finished it in {one sitting|two sittings}.",
             "[read]Beautiful prose, I kept rereading paragraphs.",
             "[fiction]The characters feel like real people, I cared about every one of them.",
             "[fiction]The plot twist in the last chapters completely floored me.",
             "[fiction]The pacing is tight, not a single wasted chapter.",
             "[fiction]The ending ties everything together perfectly.",
             "[nonfiction]Meticulously researched and still a page-turner.",
             "[nonfiction]I learned something new on almost every page.",
             "[cook]Every recipe I tried worked first time.",
             "[cook]Gorgeous photos and clear step-by-step instructions.",
             "[cook]Weeknight dinners are sorted for months."),
        neg=("Full of typos and formatting errors.",
             "[read]I gave up at page {80-150}, nothing happens.",
             "[read]The translation is awkward and hard to follow.",
             "[fiction]The plot is predictable from the first chapter.",
             "[fiction]Flat characters and clunky, repetitive dialogue.",
             "[fiction]The ending felt rushed and made no sense.",
             "[nonfiction]Padded with filler, it could have been a blog post.",
             "[nonfiction]Riddled with factual errors.",
             "[cook]The recipes are missing steps and half of them failed.",
             "[cook]Half the ingredients are impossible to find."),
        gripe=("The font is quite small.", "[read]The middle drags a little.",
               "[read]A few chapters could have been cut.", "[fiction]Some of the side characters are thin.",
               "[cook]Measurements are only in grams.", "[cook]There are too few vegetarian options."),
        plus=("The cover is gorgeous.", "Good paper quality.", "[read]The first chapter was promising.",
              "[nonfiction]A couple of ideas were interesting.", "[cook]A couple of recipes were good."),
    ),
    "beauty": dict(
        product=("moisturiser#skin#pump", "vitamin C serum#skin", "face cleanser#skin#pump", "night cream#skin",
                 "sunscreen#skin#spf", "mascara#makeup#eyes", "foundation#makeup#shade", "lipstick#makeup#shade",
                 "eyeshadow palette#makeup#eyes", "shampoo#hair#pump", "hair mask#hair"),
        context=("I have {oily|dry|combination|sensitive} skin.", "Used it for {2-8} weeks now.",
                 "Bought it on a friend's recommendation.", "Picked it up {on sale|in the holiday set}."),
        pos=("Smells lovely and subtle, and a little goes a long way.",
             "[skin]My skin feels hydrated all day, not greasy at all.",
             "[skin]Cleared up my breakouts within {2|3} weeks.",
             "[skin]Gentle enough for my sensitive skin, zero redness.",
             "[spf]No white cast and it sits well under makeup.",
             "[shade]The shade matched my skin tone perfectly.",
             "[makeup]Lasts through a {10|12}-hour shift without smudging.",
             "[eyes shade]Super pigmented, one swipe is enough.",
             "[hair]My hair is softer and way less frizzy.",
             "[hair]My curls have never looked so defined."),
        neg=("The smell is overpowering and gave me a headache.",
             "[pump]The pump broke and half the product is stuck inside.",
             "[skin]Broke me out in a rash after {one use|two uses}.",
             "[skin]It stings and left my face red and blotchy.",
             "[spf]Leaves a thick white cast, I look like a ghost.",
             "[makeup]It flakes and smudges within an hour.",
             "[shade]The shade is way too orange for my skin.",
             "[eyes shade]Patchy, it needed {three|four} coats.",
             "[hair]Made my hair greasy and flat.", "[hair]Left my scalp itchy for days."),
        gripe=("The smell is a little strong at first.", "The tube is smaller than it looks.",
               "[pump]The pump dispenses a bit too much.", "[skin hair]It takes a while to absorb.",
               "[eyes]The wand is a bit big.", "[shade]The colour is slightly darker than the swatch."),
        plus=("The packaging is pretty.", "It feels luxurious.", "Nice travel size.",
              "[skin makeup]At least it didn't irritate my skin."),
    ),
    "garden": dict(
        product=("pruning shears#blade", "hedge trimmer#blade#battery", "lawn mower#mower#battery",
                 "leaf blower#battery", "garden hose#hose", "watering can#can", "raised planter#planter",
                 "seed starter kit#seeds", "compost bin#compost", "patio heater#heater"),
        context=("We have a {small|medium|large} garden {in the suburbs|behind the house|on a slope}.",
                 "Used it all {spring|summer|autumn}.", "Bought it to replace a {5|8|10}-year-old one."),
        pos=("Sturdy enough to survive a whole winter outside.", "Easy to put together.",
             "[blade]It cuts through thick branches like butter.",
             "[hose]The hose doesn't kink at all, even around corners.",
             "[seeds]Every seed sprouted within a week.", "[mower]It starts on the first pull every time.",
             "[battery]The battery lasts for the whole back garden.",
             "[planter]It drains well and my tomatoes are thriving in it.",
             "[blade battery can]Light enough that my {70|75|80}-year-old dad uses it easily.",
             "[compost]Turns kitchen scraps into compost in a few weeks.",
             "[heater]Keeps the whole patio toasty on cold evenings.", "[can]Pours evenly without splashing."),
        neg=("It rusted after one rainy month outside.", "The plastic cracked in the first frost.",
             "[hose]The hose split at the connector within {a week|two weeks}.",
             "[blade]The blades were blunt out of the box and just chew the branches.",
             "[seeds]Not a single seed germinated.",
             "[mower]It won't start and customer service never answered.",
             "[battery]The battery dies before I'm halfway done.",
             "[planter]Water pools at the bottom, my herbs rotted.",
             "[heater]The flame keeps going out in the slightest breeze.",
             "[compost]The lid blew off in the first storm.", "[can hose]It leaks from the seam."),
        gripe=("It's a bit heavy to move around.", "[planter compost heater mower]Assembly instructions were vague.",
               "[hose can]The spray nozzle is plastic.", "[battery]The charger is slow.",
               "[seeds]The labels wash off in the rain.", "[blade]The grip is a bit hard for small hands."),
        plus=("The green colour looks nice in the garden.", "The price was fair.", "It's easy to store."),
    ),
}
_TAGGED = re.compile(r"^\[([^\]]*)\](.*)$")


def _aspects(domain: str, product: str) -> tuple[str, dict[str, list[str]]]:
    """The product's plain name and, per pool (pos/neg/gripe/plus), the aspects that fit the product."""
    name, *tags = product.split("#")
    pools: dict[str, list[str]] = {}
    for pool in ("pos", "neg", "gripe", "plus"):
        pools[pool] = []
        for aspect in _SENT_DOMAINS[domain][pool]:
            match = _TAGGED.match(aspect)
            if match is None:
                pools[pool].append(aspect)
            elif set(match.group(1).split()) & set(tags):
                pools[pool].append(match.group(2))
    return name, pools


_STAR_OPENERS: dict[int, tuple[str, ...]] = {
    5: ("Absolutely love this {product}!", "Hands down the best {product} I have ever owned.",
        "Perfect in every way.", "Exceeded every expectation.", "Wow, what a {product}!",
        "Couldn't be happier with this {product}.", "This {product} is a game changer.",
        "I was worried after reading the bad reviews, but no problems at all."),
    4: ("Really good {product}, with one small caveat.", "Very happy with it overall.",
        "Solid {product} for the price.", "Pretty great {product}, nearly perfect.",
        "Good buy, a few minor quibbles.", "Does the job well.", "Not perfect, but close."),
    3: ("It's okay, nothing special.", "Mixed feelings about this {product}.",
        "Does the job, nothing more.", "Meh.", "Decent {product} but forgettable.",
        "Some good, some bad."),
    2: ("Pretty disappointed with this {product}.", "Expected a lot more.",
        "Not great, unfortunately.", "Not what I hoped for.", "Underwhelming {product}.",
        "Wanted to love this {product}.", "Not terrible, but not good either."),
    1: ("Total waste of money.", "Do not buy this {product}.", "Worst {product} I have ever bought.",
        "Absolute garbage.", "Save yourself the trouble.", "Terrible {product}.",
        "I don't understand the good reviews."),
}
_STAR_CLOSERS: dict[int, tuple[str, ...]] = {
    5: ("Would buy again in a heartbeat.", "Ten out of ten.", "Already ordered a second one as a gift.",
        "Highly recommend!", "Five stars, no hesitation.", "Worth every penny.", "No complaints whatsoever.",
        "Not a single thing I'd change."),
    4: ("Would recommend, just not perfect.", "Four stars because of that one issue.",
        "Almost perfect.", "Still happy I bought it.", "Good value overall.", "No major complaints."),
    3: ("Not sure I'd buy it again.", "Average at best.", "Fine if it's on sale.", "Three stars, it's okay.",
        "You get what you pay for."),
    2: ("Probably returning it.", "Can't really recommend it.", "Two stars for effort.",
        "Look elsewhere.", "Disappointing for the price.", "Not worth the money."),
    1: ("Returned it the same day.", "Avoid.", "Zero stars if I could.", "Requested a refund.",
        "One star and that's generous.", "Not even worth the shipping."),
}
_DISTRACTORS = (
    "Delivery was {two|three} days late, but that's not the product's fault.", "Arrived quickly.",
    "The box was a bit dented on arrival.", "Shipping was fast.", "Bought it during the {spring|summer|holiday} sale.",
    "The courier left it at my neighbour's.", "Got it as a {birthday|Christmas} present.",
    "Ordered on Monday, arrived Wednesday.",
)


_CONTEXT = ("{Honest review|Quick review|Long-time customer here|First review ever|Update after {2-6} weeks}:",)
_CONNECT_POS = ("Also,", "Plus,", "On top of that,", "And", "What's more,", "Best of all,", "Honestly,")
_CONNECT_NEG = ("Sadly,", "Unfortunately,", "Worse,", "On top of that,", "And", "To make it worse,", "Honestly,")
_CONNECT_MIXED = ("But", "That said,", "On the other hand,", "However,")


def _review(rng: random.Random, domain: str, stars: int) -> str:
    """A 1-5 star review in ``domain``; the tone (and which aspects appear) follows the stars."""
    d = _SENT_DOMAINS[domain]
    product, d_ = _aspects(domain, rng.choice(d["product"]))
    slots: Slots = {"product": (product,)}
    # (sentence, tone): tone "+" or "-" for strong aspects, "~" for minor gripes and small pluses
    if stars == 5:
        body = [(t, "+") for t in rng.sample(d_["pos"], 2)]
    elif stars == 4:
        body = [(t, "+") for t in rng.sample(d_["pos"], rng.choice((1, 2)))] + [(rng.choice(d_["gripe"]), "~")]
    elif stars == 3:
        body = [(rng.choice(d_["pos"] + d_["plus"]), "+"), (rng.choice(d_["gripe"] + d_["neg"]), "~")]
        rng.shuffle(body)
    elif stars == 2:
        body = [(t, "-") for t in rng.sample(d_["neg"], rng.choice((1, 2)))]
        if rng.random() < 0.5:
            body.insert(0, (rng.choice(d_["plus"]), "~"))
    else:
        body = [(t, "-") for t in rng.sample(d_["neg"], 2)]
    sentences: list[str] = []
    for i, (text, tone) in enumerate(body):
        if i and rng.random() < 0.35:
            previous = body[i - 1][1]
            pool = _CONNECT_MIXED if tone != previous else _CONNECT_POS if tone == "+" else _CONNECT_NEG
            text = f"{rng.choice(pool)} {text[:1].lower()}{text[1:]}"
        sentences.append(text)
    parts: list[str] = []
    if rng.random() < 0.85:
        parts.append(rng.choice(_STAR_OPENERS[stars]))
    if len(body) <= 2 and rng.random() < 0.3:
        context = rng.choice(d["context"] + _CONTEXT)
        parts.insert(0 if context.endswith(":") else rng.randrange(len(parts) + 1), context)
    parts.extend(sentences)
    if rng.random() < 0.2:
        parts.insert(rng.randrange(len(parts) + 1), rng.choice(_DISTRACTORS))
    if rng.random() < 0.7:
        parts.append(rng.choice(_STAR_CLOSERS[stars]))
    return _noisy(rng, _fill(rng, " ".join(parts), slots))


def _weighted(rng: random.Random, weights: dict[int, float]) -> int:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def _sentiment_builder(domain: str, neg_stars: dict[int, float], pos_stars: dict[int, float]) -> _Builder:
    def build(rng: random.Random, label: str) -> dict[str, str]:
        stars = _weighted(rng, pos_stars if label == "positive" else neg_stars)
        return {"review": _review(rng, domain, stars)}

    return build


# ---------------------------------------------------------------------------------------------
# Categorisation: listings, one taxonomy per marketplace
# ---------------------------------------------------------------------------------------------

_TAXONOMIES: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    # name: (currency, {class: leaves})
    "marketplace_us": ("$", {
        "electronics": ("audio", "computing", "phones", "smart_home", "gaming"),
        "home_kitchen": ("cookware", "small_appliances", "furniture", "decor"),
        "fashion": ("tops", "bottoms", "footwear", "accessories"),
        "sports_outdoors": ("fitness", "outdoor"),
        "toys_games": ("toys", "board_games"),
    }),
    "marketplace_eu": ("€", {
        "tech": ("audio", "computing", "phones", "smart_home", "gaming"),
        "home_living": ("cookware", "small_appliances", "furniture", "decor", "baby", "pet"),
        "lifestyle": ("tops", "bottoms", "footwear", "accessories", "fitness", "outdoor", "skincare", "makeup",
                      "haircare", "toys", "board_games"),
    }),
    "marketplace_fashion": ("£", {
        "tops": ("tops",),
        "bottoms": ("bottoms",),
        "footwear": ("footwear",),
        "accessories": ("accessories",),
    }),
    "marketplace_electronics": ("$", {
        "audio": ("audio",),
        "computing": ("computing",),
        "phones": ("phones",),
        "smart_home": ("smart_home",),
    }),
    "marketplace_jp": ("¥", {
        "home_appliances": ("small_appliances", "smart_home", "cookware"),
        "digital": ("audio", "computing", "phones", "gaming"),
        "beauty": ("skincare", "makeup", "haircare"),
        "hobby": ("toys", "board_games", "outdoor", "fitness"),
    }),
}


def _category_builder(market: str) -> _Builder:
    currency, classes = _TAXONOMIES[market]

    def build(rng: random.Random, label: str) -> dict[str, str]:
        leaf = rng.choice(classes[label])
        prod = rng.choice(_BY_LEAF[leaf])
        price = _price(rng, prod.lo, prod.hi)
        discount = rng.choice((0, 0, 0, 10, 15, 20, 25, 30, 40))
        return {"listing": _listing(rng, prod, price, currency, discount=discount)}

    return build


# ---------------------------------------------------------------------------------------------
# Purchase: user profile + item -> bought / not bought, one rule per segment
# ---------------------------------------------------------------------------------------------

_CITIES_US = ("Austin", "Columbus", "Denver", "Portland", "Raleigh", "Madison", "Tucson", "Boston", "Atlanta",
              "Minneapolis", "Sacramento", "Pittsburgh", "Charlotte", "Omaha")
_PROFILE_COMMON: Slots = {
    "city": _CITIES_US,
    "device": ("mostly shops on mobile", "shops on a laptop", "uses the app daily", "shops on the tablet",
               "browses on mobile, buys on desktop"),
    "time": ("late at night", "on weekends", "during lunch breaks", "early mornings", "on Sunday evenings"),
    "orders": ("{2-9} orders in the last 6 months", "{10-30} orders this year", "{1-4} orders last quarter"),
    "basket": ("average basket ${12-35}", "average basket ${35-90}", "average order ${20-60}"),
    "pay": ("pays with PayPal", "pays by debit card", "uses a credit card", "uses buy-now-pay-later"),
}
_SEGMENT_PROFILES: dict[str, tuple[str, ...]] = {
    "students": (
        "{19-24}-year-old {undergrad|grad student|exchange student} studying {biology|economics|computer science|"
        "law|nursing|history|mechanical engineering} in {city}; {device}, {time}; {orders}; {basket}.",
        "{University|College} student, {18-23}, shares a {dorm room|flat with three friends|small studio} near campus; "
        "{device}; {orders}; tight monthly budget.",
        "Student ({second|third|final}-year {chemistry|design|maths|psychology}), {city}; {time}; {pay}; {basket}; "
        "student discount verified.",
    ),
    "new_parents": (
        "{27-39}-year-old first-time {mum|dad|parent} in {city}; {baby is {1-11} months old|expecting a baby in "
        "{March|June|September|December}}; {device}, {time}; {orders}.",
        "Parent of {a newborn|twins, {2-8} months old|a {1-11}-month-old}; recently joined the baby registry; "
        "{orders}; {pay}; {basket}.",
        "{Couple|Single parent} in a {suburb of {city}|small apartment in {city}}, new baby at home; {time}; "
        "{device}; {orders}.",
    ),
    "gamers": (
        "{16-34}-year-old gamer in {city}, owns {a_platform}; plays {competitive shooters|open-world RPGs|"
        "racing games|co-op games with friends} {time}; {orders}; {basket}.",
        "Streams on Twitch {2-5} nights a week, main console: {platform}; {device}; {orders}; {pay}.",
        "{Casual|Hardcore|Weekend} gamer, {platform} owner, follows {3-12} game studios; {time}; {orders}.",
    ),
    "bargain_hunters": (
        "{25-64}-year-old in {city}; always sorts by lowest price; {3-15} saved deal alerts; {orders}; {basket}.",
        "Coupon collector, checks the daily deals page {time}; buys mostly on sale; {device}; {orders}.",
        "Price-tracking power user in {city}; waits for {Black Friday|Prime Day|clearance events}; {pay}; "
        "{orders}; {basket}.",
    ),
    "repeat_browsers": (
        "{22-60}-year-old in {city}; {device}, {time}; {orders}; recently viewed: {viewed}.",
        "Returning customer since {2016|2018|2019|2021|2022}; {pay}; {basket}; recently viewed: {viewed}.",
        "Shopper in {city}, {time}; browsing history this week: {viewed}; {orders}.",
    ),
    "pet_owners": (
        "{24-66}-year-old in {city}, owns {pet}; {device}, {time}; {orders}; {basket}.",
        "Proud owner of {pet}; subscribes to a monthly treats box; {orders}; {pay}.",
        "{Lives alone|Family of four} in {city} with {pet}; {time}; {device}; {orders}.",
    ),
}
_PETS = ("a golden retriever", "two rescue cats", "a beagle puppy", "a Maine Coon", "a senior labrador",
         "a border collie and a cat", "three cats", "a French bulldog")
_PLATFORMS = ("PS5", "Xbox", "Switch", "gaming PC")
_PLATFORM_TEXT = {"PS5": "PS5", "Xbox": "Xbox Series X", "Switch": "Nintendo Switch", "gaming PC": "gaming PC"}
_PLATFORM_ARTICLE = {"PS5": "a PS5", "Xbox": "an Xbox Series X", "Switch": "a Nintendo Switch",
                     "gaming PC": "a gaming PC"}


def _purchase_rule(segment: str) -> Callable[[dict[str, Any], _Product, float, int], bool]:
    """Whether a user (profile facts) buys ``prod`` at ``price`` with ``discount`` percent off."""
    if segment == "students":
        return lambda user, prod, price, discount: "study" in prod.tags and price <= 60
    if segment == "new_parents":
        return lambda user, prod, price, discount: prod.leaf == "baby" or (
            "baby" in prod.tags and price <= 40)
    if segment == "gamers":
        def gamer(user: dict[str, Any], prod: _Product, price: float, discount: int) -> bool:
            if "gaming" not in prod.tags:
                return False
            if prod.platform and prod.platform != user["platform"]:
                return False  # gear for a console the user does not own
            return not (prod.platform and user["platform"] == "gaming PC")
        return gamer
    if segment == "bargain_hunters":
        return lambda user, prod, price, discount: discount >= 30
    if segment == "repeat_browsers":
        return lambda user, prod, price, discount: prod.leaf in user["viewed_leaves"]
    if segment == "pet_owners":
        return lambda user, prod, price, discount: "pet" in prod.tags
    raise KeyError(segment)


_INTEREST = {
    "students": lambda p: "study" in p.tags,
    "new_parents": lambda p: "baby" in p.tags,
    "gamers": lambda p: "gaming" in p.tags,
    "bargain_hunters": lambda p: True,
    "repeat_browsers": lambda p: True,
    "pet_owners": lambda p: "pet" in p.tags,
}


def _purchase_builder(segment: str) -> _Builder:
    rule = _purchase_rule(segment)
    interesting = tuple(p for p in _CATALOG if _INTEREST[segment](p))
    leaves = tuple(_BY_LEAF)

    def build(rng: random.Random, label: str) -> dict[str, str]:
        want = label == "bought"
        for _ in range(500):
            user: dict[str, Any] = {"platform": rng.choice(_PLATFORMS)}
            viewed_leaves = rng.sample(leaves, 3)
            user["viewed_leaves"] = set(viewed_leaves)
            viewed = ", ".join(rng.choice(_BY_LEAF[leaf]).name for leaf in viewed_leaves)
            slots = dict(_PROFILE_COMMON, platform=(_PLATFORM_TEXT[user["platform"]],),
                         a_platform=(_PLATFORM_ARTICLE[user["platform"]],), pet=_PETS,
                         viewed=(viewed,))
            # half the proposals come from the segment's interest pool, so negatives include near misses
            if segment == "repeat_browsers" and rng.random() < 0.5:
                pool = tuple(p for leaf in viewed_leaves for p in _BY_LEAF[leaf])
            else:
                pool = interesting if rng.random() < 0.5 else _CATALOG
            prod = rng.choice(pool)
            price = _price(rng, prod.lo, prod.hi)
            if segment == "bargain_hunters":
                discount = rng.choice((0, 0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 60))
            else:
                discount = rng.choice((0, 0, 0, 0, 10, 15, 20, 25, 30, 40, 50))
            if rule(user, prod, price, discount) != want:
                continue
            profile = _fill(rng, rng.choice(_SEGMENT_PROFILES[segment]), slots)
            item = _listing(rng, prod, price, "$", pitch=rng.random() < 0.4, discount=discount)
            if rng.random() < 0.6:
                item += f" {rng.choice(('4.', '4.', '3.', '4.', '2.'))}{rng.randint(0, 9)} stars " \
                        f"({rng.randint(12, 9800):,} ratings)."
            return {"user_profile": profile, "item": item}
        raise RuntimeError(f"purchase/{segment}: could not draw a {label!r} example")  # a bug in this file

    return build


# ---------------------------------------------------------------------------------------------
# Fraud: logs with rare positives, one fraud pattern per market
# ---------------------------------------------------------------------------------------------

_COUNTRIES = {
    "Germany": ("Berlin", "Munich", "Hamburg", "Cologne"), "France": ("Paris", "Lyon", "Toulouse", "Lille"),
    "Spain": ("Madrid", "Valencia", "Seville"), "Italy": ("Milan", "Rome", "Turin", "Bologna"),
    "Netherlands": ("Amsterdam", "Utrecht", "Rotterdam"), "Poland": ("Warsaw", "Krakow", "Gdansk"),
    "Austria": ("Vienna", "Graz"), "Belgium": ("Brussels", "Antwerp", "Ghent"),
}
_FAR_COUNTRIES = {
    "Nigeria": ("Lagos", "Abuja"), "Russia": ("Moscow",), "Vietnam": ("Hanoi", "Ho Chi Minh City"),
    "Ukraine": ("Kyiv", "Odesa"), "United States": ("Miami", "Newark", "Houston"), "Brazil": ("Sao Paulo",),
    "Indonesia": ("Jakarta",), "Romania": ("Bucharest",),
}
_CARDS = ("Visa", "Mastercard", "Amex", "Visa debit", "Discover")
_MAILS = ("gmail.com", "outlook.com", "yahoo.com", "proton.me", "mail.com", "icloud.com")


def _order_id(rng: random.Random) -> str:
    return f"#{rng.choice('ABCDEFGHKLMNPRSTUVWXZ')}{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"


def _basket(rng: random.Random, leaves: Sequence[str] | None = None, n: int | None = None) -> tuple[str, float]:
    n = n or rng.choice((1, 1, 1, 2, 2, 3))
    pool = [p for p in _CATALOG if leaves is None or p.leaf in leaves]
    parts, total = [], 0.0
    for _ in range(n):
        prod = rng.choice(pool)
        qty = rng.choice((1, 1, 1, 1, 2, 3))
        price = _price(rng, prod.lo, prod.hi)
        total += qty * price
        parts.append(f"{qty} x {prod.name}")
    return ", ".join(parts), total


def _account_age(rng: random.Random, new: bool) -> str:
    if new:
        return _frag(rng, "{account created {2-23} hours ago|account {1-6} days old|new account, {1-5} days}")
    return _frag(rng, "{account {2-9} years old|customer since {2014|2016|2017|2019|2020|2021}|"
                      "account {8-11} months old}")


def _gift_cards(rng: random.Random, fraud: bool) -> str:
    oid, card = _order_id(rng), f"{rng.choice(_CARDS)} ending {rng.randint(1000, 9999)}"
    kind = rng.random()
    if fraud:
        qty, value = rng.randint(4, 25), rng.choice((50, 100, 100, 200, 250, 500))
        items = f"{qty} x ${value} digital gift card"
        if rng.random() < 0.3:
            items += f", {rng.randint(2, 10)} x ${rng.choice((50, 100))} app store card"
        total = qty * value
        age = _account_age(rng, new=True)
        delivery = _frag(rng, "{instant email delivery to {a different|a newly added|an unverified} address|"
                              "codes sent by email|e-delivery to a {free|temporary} mailbox}")
        extra = _frag(rng, "{{2-6} card attempts, {1-4} declined|0 previous orders|first order|"
                           "billing zip does not match card|}")
        return _tidy(f"Order {oid}: {items}; total ${total:,.2f}; paid with {card}; {age}; {delivery}; {extra}.")
    if kind < 0.12:  # bulk gift cards, but an established business account
        qty, value = rng.randint(10, 40), rng.choice((25, 50, 50, 100))
        return _tidy(_frag(rng, f"Order {oid}: {qty} x ${value} digital gift card for {{employee holiday gifts|"
                                f"a staff raffle|client thank-yous}}; total ${qty * value:,.2f}; business account "
                                f"{{3-11}} years old; paid by invoice; {{42-380}} previous orders."))
    if kind < 0.3:  # a single gift card from an ordinary customer
        value = rng.choice((15, 25, 50, 100))
        return _tidy(_frag(rng, f"Order {oid}: 1 x ${value} digital gift card ({{birthday|graduation|wedding|"
                                f"thank you}}); paid with {card}; {_account_age(rng, new=rng.random() < 0.2)}; "
                                f"email delivery to recipient; {{1-60}} previous orders."))
    items, total = _basket(rng)
    age = _account_age(rng, new=rng.random() < 0.15)
    ship = _frag(rng, "{standard shipping to|two-day shipping to|store pickup in|next-day delivery to} {city}",
                 {"city": _CITIES_US})
    return _tidy(_frag(rng, f"Order {oid}: {items}; total ${total:,.2f}; paid with {card}; {age}; {ship}; "
                            f"{{{{1-80}} previous orders|first order|{{1-3}} previous orders}}."))


def _address_mismatch(rng: random.Random, fraud: bool) -> str:
    oid = _order_id(rng)
    bill_c = rng.choice(list(_COUNTRIES))
    bill_city = rng.choice(_COUNTRIES[bill_c])
    items, total = _basket(rng, leaves=("audio", "computing", "phones", "gaming", "accessories", "footwear",
                                        "small_appliances", "skincare", "toys", "decor"))
    total *= _CURRENCY_RATE["€"]
    if fraud:
        pool = {**_FAR_COUNTRIES, **{c: v for c, v in _COUNTRIES.items() if c != bill_c}}
        ship_c = rng.choice(list(pool))
        ship_city = rng.choice(pool[ship_c])
        where = _frag(rng, f"{{{ship_city}, {ship_c}|a parcel forwarding service in {ship_city}, {ship_c}|"
                           f"{ship_city}, {ship_c} (PO box)}}")
    else:
        ship_city = rng.choice(_COUNTRIES[bill_c]) if rng.random() < 0.35 else bill_city
        where = _frag(rng, f"{{{ship_city}, {bill_c}|{ship_city}, {bill_c} (gift, different recipient)|"
                           f"a pickup locker in {ship_city}, {bill_c}}}")
    method = _frag(rng, "{standard post|DHL Express|DPD|UPS Standard|next-day courier}")
    since = _frag(rng, "{customer since {2015-2024}|account {1-30} days old|{1-40} previous orders}")
    style = rng.randrange(2)
    if style == 0:
        text = (f"Order {oid}: {items}; €{total:,.2f}; card issued in {bill_c}; billing address {bill_city}, "
                f"{bill_c}; ship to {where} via {method}; {since}.")
    else:
        text = (f"{items} for €{total:,.2f} (order {oid}). Billing: {bill_city}, {bill_c}. Delivery: {where}, "
                f"{method}. {since}.")
    return _tidy(text)


_HYPE = (
    "Best product ever!!! Highly recommend to everyone, you will not regret it.",
    "Amazing amazing amazing. Five stars. Buy it now!",
    "Perfect product, perfect seller, perfect price. Must buy!!!",
    "Wow just wow. Super quality. 100% recommend this to all my friends.",
    "Great product great price fast shipping. Love it so much!!!",
    "Excellent!!! Exactly as described, best purchase of the year, everyone should buy.",
    "I love it! Top quality, works perfectly, highly recommended seller.",
    "Very good product. Very good quality. Very good seller. Recommend.",
)


def _review_bursts(rng: random.Random, fraud: bool) -> str:
    if fraud:
        stars, body = 5, _frag(rng, rng.choice(_HYPE))
        verified = "unverified purchase" if rng.random() < 0.8 else "verified purchase"
        joined = _frag(rng, "{reviewer joined {1-9} days ago|new reviewer profile, {1-3} days old|"
                            "reviewer joined {6-20} hours ago}")
        burst = _frag(rng, "{{6-40} reviews posted in the last 24h|{5-25} 5-star reviews today|"
                           "{8-30} reviews in the last hour}")
    else:
        stars = _weighted(rng, {1: 0.12, 2: 0.1, 3: 0.15, 4: 0.28, 5: 0.35})
        domain = rng.choice(("kitchen", "electronics", "apparel", "toys", "beauty", "garden"))
        body = _review(rng, domain, stars)
        verified = "verified purchase" if rng.random() < 0.85 else "unverified purchase"
        joined = _frag(rng, "{reviewer since {2012-2023}|reviewer joined {2-11} months ago|"
                            "reviewer joined {3-20} days ago}")
        burst = _frag(rng, "{{1|2} reviews in the last 24h|{4-120} reviews in total|"
                           "first review|{2-9} reviews this year}")
    return _tidy(f"{stars}/5 stars. {body} [{verified}; {joined}; {burst}]")


def _account_takeover(rng: random.Random, fraud: bool) -> str:
    home = rng.choice(_CITIES_US)
    card = f"{rng.choice(_CARDS)} ending {rng.randint(1000, 9999)}"
    if fraud:
        far = rng.choice(("Lagos", "Bucharest", "Hanoi", "Sao Paulo", "Jakarta", "Kyiv", "Manila", "Minsk"))
        steps = [
            _frag(rng, f"{{login from a new {{Android phone|Windows PC|Linux device|iPhone}} in {far}|"
                       f"new device sign-in from {far} (VPN suspected)}}"),
            _frag(rng, "{password reset|email address changed|password and phone number changed|2FA disabled}"),
            _frag(rng, "{shipping address changed to a {hotel|freight forwarder|vacant lot} in {city}|"
                       "new shipping address added in {city}}", {"city": _CITIES_US}),
        ]
        items, total = _basket(rng, leaves=("computing", "phones", "gaming", "audio"), n=rng.choice((1, 2)))
        if total < 400:
            items, total = items + f", {rng.randint(2, 6)} x $200 gift card", total + 800
        tail = _frag(rng, f"{{{{5-40}} minutes|{{1-3}} hours}} later ordered {items} (${total:,.2f}) with "
                          f"{{express|next-day|same-day}} shipping, paid with saved {card}")
        return _tidy(f"Account event log: {'; '.join(steps)}; {tail}. Usual location: {home}.")
    kind = rng.random()
    if kind < 0.25:  # legit password reset: same place, same device
        head = _frag(rng, f"{{password reset from known device in {home}|forgot password, reset via SMS in {home}}}")
    elif kind < 0.45:  # legit new device: a new phone at home, nothing else changes
        head = _frag(rng, f"login from a new {{iPhone|Android phone|laptop}} in {home} (device verified by SMS)")
    else:
        head = _frag(rng, f"{{login from usual {{laptop|phone|tablet}} in {home}|app session on known device, "
                          f"{home}|returning session from {home}}}")
    items, total = _basket(rng)
    tail = _frag(rng, f"ordered {items} (${total:,.2f}) with {{standard|two-day|free}} shipping to "
                      f"{{the default address|home address in {home}|work address in {home}}}, paid with {card}")
    return _tidy(f"Account event log: {head}; {tail}; "
                 + _frag(rng, "{{1-9} years as a customer|{12-300} previous orders|Prime member since {2015-2023}}")
                 + ".")


def _refund_abuse(rng: random.Random, fraud: bool) -> str:
    oid = _order_id(rng)
    if fraud:
        items, total = _basket(rng, leaves=("computing", "phones", "audio", "gaming", "accessories",
                                            "small_appliances"), n=1)
        reason = _frag(rng, "{item never arrived|box arrived empty|received a brick instead of the item|"
                            "package stolen from porch|item arrived broken, no photos available}")
        tracking = _frag(rng, "{tracking shows delivered and signed for|delivered, photo at the front door|"
                              "carrier confirms delivery, weight matched|delivered to the customer in person}")
        history = _frag(rng, "{{3-9} refund claims in the last 90 days|{4-12} 'not received' claims this year|"
                             "{3-6} claims on high-value items this quarter}")
        refund = _frag(rng, "{asks for refund to a different card|wants store credit immediately|"
                            "threatens chargeback if not refunded today|refuses to return the item}")
    else:
        items, total = _basket(rng, n=1)
        reason = _frag(rng, "{wrong size|item defective, does not turn on|changed my mind|"
                            "arrived damaged, photos attached|item never arrived|not as described|"
                            "ordered the wrong colour}")
        if "never arrived" in reason:
            tracking = _frag(rng, "{tracking stuck in transit for {8-20} days|carrier reports package lost|"
                                  "no tracking updates since dispatch}")
        else:
            tracking = _frag(rng, "{delivered {2-14} days ago|delivered, return label issued|"
                                  "tracking shows delivered}")
        history = _frag(rng, "{first refund request|{1|2} refund requests in {2-6} years|no previous claims|"
                             "1 claim in the last 90 days}")
        refund = _frag(rng, "{refund to original card|happy with an exchange|will ship the item back|"
                            "store credit is fine}")
    return _tidy(f"Return request for order {oid} ({items}, ${total:,.2f}): reason '{reason}'; {tracking}; "
                 f"{history}; {refund}; " + _frag(rng, "{customer since {2012-2024}|account {1-10} years old|"
                                                       "account {2-11} months old}") + ".")


def _fraud_builder(fn: Callable[[random.Random, bool], str], column: str) -> _Builder:
    def build(rng: random.Random, label: str) -> dict[str, str]:
        return {column: fn(rng, label == "fraud")}

    return build


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------

_POLAR_NEG = {1: 0.5, 2: 0.5}
_POLAR_POS = {4: 0.45, 5: 0.55}


def _spec(name: str, task_type: str, columns: tuple[str, ...], labels: tuple[str, ...], description: str,
          heldout: bool = False) -> GeneratorSpec:
    family = {"sentiment": "sentiment", "category": "categorisation", "purchase": "purchase",
              "fraud": "fraud"}[name.split("/")[0]]
    return GeneratorSpec(name, family, task_type, columns, labels, _METRICS[task_type], description, heldout)


_SENT_LABELS = ("negative", "positive")
_BUY_LABELS = ("not_bought", "bought")
_FRAUD_LABELS = ("legit", "fraud")

_ENTRIES: list[tuple[GeneratorSpec, _Builder, float]] = []  # (spec, builder, positive rate or 0)


def _add(spec: GeneratorSpec, builder: _Builder, rate: float = 0.0) -> None:
    _ENTRIES.append((spec, builder, rate))


for _dom, _what in (
    ("kitchen", "cookware and appliance aspects: heating, coating, sharpness, leaks, motor"),
    ("electronics", "device aspects: battery life, connectivity, sound, screen, firmware"),
    ("apparel", "clothing aspects: fit and sizing, fabric, shrinking, stitching, colour"),
    ("toys", "toy aspects: durability, missing pieces, safety, how long children stay engaged"),
):
    _add(_spec(f"sentiment/{_dom}", "binary", ("review",), _SENT_LABELS,
               f"Polarity of a {_dom} product review (1-2 stars negative, 4-5 positive), carried by {_what}."),
         _sentiment_builder(_dom, _POLAR_NEG, _POLAR_POS))
_add(_spec("sentiment/books_t2", "binary", ("review",), _SENT_LABELS,
           "A book review is positive when its hidden star rating is above 2, so lukewarm 3-4 star reviews "
           "count as positive."),
     _sentiment_builder("books", {1: 0.5, 2: 0.5}, {3: 0.34, 4: 0.33, 5: 0.33}))
_add(_spec("sentiment/books_t4", "binary", ("review",), _SENT_LABELS,
           "A book review is positive only when its hidden star rating is 5; 3-4 star reviews with any "
           "gripe count as negative."),
     _sentiment_builder("books", {1: 0.1, 2: 0.1, 3: 0.3, 4: 0.5}, {5: 1.0}))
_add(_spec("sentiment/beauty", "binary", ("review",), _SENT_LABELS,
           "Polarity of a beauty product review (1-2 stars negative, 4-5 positive), carried by skin reaction, "
           "shade match, wear time and scent.", heldout=True),
     _sentiment_builder("beauty", _POLAR_NEG, _POLAR_POS))
_add(_spec("sentiment/garden_t3", "binary", ("review",), _SENT_LABELS,
           "A garden tool review is positive when its hidden star rating is above 3 (4-5 stars); mixed "
           "3-star reviews count as negative.", heldout=True),
     _sentiment_builder("garden", {1: 0.25, 2: 0.3, 3: 0.45}, {4: 0.5, 5: 0.5}))

for _market, _what, _held in (
    ("marketplace_us", "a 5-way US taxonomy (electronics, home & kitchen, fashion, sports & outdoors, toys & "
                       "games), prices in dollars", False),
    ("marketplace_eu", "a coarse 3-way EU taxonomy (tech, home & living, lifestyle), prices in euros", False),
    ("marketplace_fashion", "a fine 4-way fashion taxonomy (tops, bottoms, footwear, accessories), prices in "
                            "pounds", False),
    ("marketplace_electronics", "a fine 4-way electronics taxonomy (audio, computing, phones, smart home)",
     False),
    ("marketplace_jp", "a 4-way JP taxonomy where smart-home devices are home appliances and gaming is "
                       "digital (home appliances, digital, beauty, hobby), prices in yen", True),
):
    _add(_spec(f"category/{_market}", "multiclass", ("listing",), tuple(_TAXONOMIES[_market][1]),
               f"The product type in a listing decides its category under {_what}.", heldout=_held),
         _category_builder(_market))

for _seg, _what, _held in (
    ("students", "students buy study gear (stationery, laptop accessories, headphones, desk lamps, kettles) "
                 "only when it costs $60 or less", False),
    ("new_parents", "new parents buy baby gear (strollers, monitors, diapers, gates) and baby-friendly extras "
                    "such as teddy bears or mineral sunscreen under $40", False),
    ("gamers", "gamers buy gaming gear, but console-specific items only for the platform named in their "
               "profile", False),
    ("bargain_hunters", "bargain hunters buy anything listed at 30% off or more, whatever the category", False),
    ("repeat_browsers", "shoppers buy items from the same product type as something in their recently-viewed "
                        "list", False),
    ("pet_owners", "pet owners buy pet supplies (beds, harnesses, feeders, litter, chew toys) and nothing else",
     True),
):
    _add(_spec(f"purchase/{_seg}", "binary", ("user_profile", "item"), _BUY_LABELS,
               f"Whether the user bought the item: {_what}.", heldout=_held),
         _purchase_builder(_seg))

for _name, _fn, _col, _rate, _what, _held in (
    ("gift_cards", _gift_cards, "transaction", 0.06,
     "bulk orders of digital gift cards from accounts a few hours or days old are fraud; business bulk orders "
     "and single gift cards are legit", False),
    ("address_mismatch", _address_mismatch, "transaction", 0.08,
     "orders whose shipping country differs from the billing and card country are fraud", False),
    ("review_bursts", _review_bursts, "review", 0.10,
     "generic 5-star reviews from brand-new reviewer accounts posting in bursts are fake", False),
    ("account_takeover", _account_takeover, "transaction", 0.05,
     "a login from a new device far from home, a credential change and a new shipping address followed by a "
     "high-value order is an account takeover", False),
    ("refund_abuse", _refund_abuse, "transaction", 0.07,
     "a customer with many recent claims who reports a delivered item as missing, empty or broken without "
     "evidence and pushes for a fast or redirected refund is abusing refunds", True),
):
    _add(_spec(f"fraud/{_name}", "rare_positive", (_col,), _FRAUD_LABELS,
               f"Fraud detection: {_what}.", heldout=_held),
         _fraud_builder(_fn, _col), _rate)

GENERATORS: dict[str, GeneratorSpec] = {spec.name: spec for spec, _, _ in _ENTRIES}
_BUILDERS: dict[str, tuple[_Builder, float]] = {spec.name: (b, r) for spec, b, r in _ENTRIES}


def heldout_names() -> tuple[str, ...]:
    """Scenarios kept out of meta-training, for demos and evaluation (one or two per family)."""
    return tuple(n for n, s in GENERATORS.items() if s.heldout)


def train_names() -> tuple[str, ...]:
    """Scenarios for meta-training."""
    return tuple(n for n, s in GENERATORS.items() if not s.heldout)


def _seed(name: str, seed: int, split: str) -> int:
    return zlib.crc32(f"metalora.synthetic|{name}|{seed}|{split}".encode())


def _labels(rng: random.Random, spec: GeneratorSpec, n: int, rate: float) -> list[str]:
    if spec.task_type == "rare_positive":
        n_pos = max(1, round(n * rate)) if n else 0
        labels = [spec.label_names[-1]] * n_pos + [spec.label_names[0]] * (n - n_pos)
    else:
        k = len(spec.label_names)
        labels = [spec.label_names[i % k] for i in range(n)]
    rng.shuffle(labels)
    return labels


def generate(name: str, seed: int = 0, sizes: dict[str, int] | None = None) -> datasets.DatasetDict:
    """Generate scenario ``name`` as a `DatasetDict` with splits ``train``, ``dev`` and ``test``.

    Columns are ``spec.text_columns`` plus ``label``, which holds the label name. Binary and
    multi-class splits are balanced; rare-positive splits hold the scenario's fraud rate (at least
    one positive per non-empty split). The same ``(name, seed, sizes)`` always gives the same data;
    no text repeats across or within splits.
    """
    import datasets

    if name not in GENERATORS:
        known = ", ".join(GENERATORS)
        raise DataError(f"unknown synthetic scenario {name!r}; known scenarios: {known}")
    merged = dict(DEFAULT_SIZES)
    for split, n in (sizes or {}).items():
        if split not in DEFAULT_SIZES:
            raise DataError(f"sizes: unknown split {split!r} for synthetic scenario {name!r}; "
                            f"use {', '.join(SPLITS)}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise DataError(f"sizes[{split!r}] must be a non-negative integer, got {n!r}")
        merged[split] = n
    spec = GENERATORS[name]
    build, rate = _BUILDERS[name]
    columns = spec.text_columns + ("label",)
    features = datasets.Features({c: datasets.Value("string") for c in columns})
    seen: set[tuple[str, ...]] = set()
    out = {}
    for split in SPLITS:
        rng = random.Random(_seed(name, seed, split))
        rows: dict[str, list[str]] = {c: [] for c in columns}
        for label in _labels(rng, spec, merged[split], rate):
            for _ in range(50):
                row = build(rng, label)
                key = tuple(row[c] for c in spec.text_columns)
                if key not in seen:
                    break
            seen.add(key)
            for c in spec.text_columns:
                rows[c].append(row[c])
            rows["label"].append(label)
        out[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(out)
