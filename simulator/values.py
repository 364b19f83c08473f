"""Realistic values, fast: pools pre-generated once with Faker, then drawn with `random`.

Calling Faker per row costs tens of microseconds per field; drawing from a pool costs well
under one. The pools mix locales so names, streets and cities include non-ASCII text
(German umlauts, French accents, Polish letters, Japanese).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from faker import Faker

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "pl_PL", "ja_JP")
POOL_SIZE = 600
_COUNTRY = {
    "en_US": "US",
    "en_GB": "GB",
    "de_DE": "DE",
    "fr_FR": "FR",
    "es_ES": "ES",
    "pl_PL": "PL",
    "ja_JP": "JP",
}


@dataclass(frozen=True)
class Pools:
    """Value pools; every list has the same locale at the same index where that matters."""

    first_names: tuple[str, ...]
    last_names: tuple[str, ...]
    emails: tuple[str, ...]
    phones: tuple[str, ...]
    streets: tuple[str, ...]
    cities: tuple[str, ...]
    postcodes: tuple[str, ...]
    countries: tuple[str, ...]
    companies: tuple[str, ...]
    words: tuple[str, ...]
    ibans: tuple[str, ...]


@lru_cache(maxsize=4)
def pools(seed: int) -> Pools:
    """The pools for `seed` (deterministic; cached, so workers share one copy)."""
    fake = Faker(list(LOCALES))
    fake.seed_instance(seed)
    rng = random.Random(seed)
    first, last, streets, cities, posts, countries, companies, words = ([] for _ in range(8))
    for _ in range(POOL_SIZE):
        locale = rng.choice(LOCALES)
        f = fake[locale]
        first.append(f.first_name())
        last.append(f.last_name())
        streets.append(f.street_address())
        cities.append(f.city())
        posts.append(f.postcode())
        countries.append(_COUNTRY[locale])
        companies.append(f.company())
        words.append(f.word())
    en = fake["en_US"]
    return Pools(
        first_names=tuple(first),
        last_names=tuple(last),
        emails=tuple(en.unique.email() for _ in range(POOL_SIZE)),
        phones=tuple(fake[rng.choice(LOCALES)].phone_number() for _ in range(POOL_SIZE)),
        streets=tuple(streets),
        cities=tuple(cities),
        postcodes=tuple(posts),
        countries=tuple(countries),
        companies=tuple(companies),
        words=tuple(words),
        ibans=tuple(en.iban() for _ in range(POOL_SIZE)),
    )


def money(rng: random.Random, low: float, high: float) -> Decimal:
    """A random amount with cents in [low, high]."""
    return Decimal(rng.randint(int(low * 100), int(high * 100))) / 100


def maybe(rng: random.Random, value: object, null_share: float) -> object:
    """`value`, or None with probability `null_share` (real data has gaps)."""
    return None if rng.random() < null_share else value


def email(rng: random.Random, p: Pools) -> str:
    """A plausible unique-ish email: pool address with a numeric tag."""
    user, domain = rng.choice(p.emails).split("@")
    return f"{user}{rng.randint(1, 9999)}@{domain}"
