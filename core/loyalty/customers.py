"""Loyalty customers: the profile, how each of its fields is validated and normalised, consents to
be contacted by mail, SMS and e-mail, and the CSV format customers are imported from.

Pure: values in, frozen values or typed errors out. Every problem names its field, and a profile
reports all of its problems at once. Consents are append-only history; the current state of a
channel is derived from it (the consent given last wins).
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from typing import Any

from ..errors import DomainError, InvalidInput

__all__ = [
    "Gender", "Channel", "ConsentSource", "Problem", "InvalidProfile", "DuplicateCustomer", "CardAlreadyBound",
    "Address", "Profile", "Consent", "PROFILE_FIELDS", "COUNTRIES", "make_profile", "changed_profile",
    "profile_diff", "normalise_phone", "normalise_email", "email_key", "consent", "current_consents",
    "consent_changes", "LineProblem", "ImportLine", "CustomerFile", "CSV_COLUMNS", "MAX_ROWS",
    "parse_customers_csv", "customers_csv",
]


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"
    OTHER = "other"
    UNSPECIFIED = "unspecified"


class Channel(StrEnum):
    """How a customer may be contacted, each with its own consent."""

    MAIL = "mail"
    SMS = "sms"
    EMAIL = "email"


class ConsentSource(StrEnum):
    """Where a consent was given: at a till, on a website (or a paper form typed in), to staff, or in an
    import from an earlier system."""

    TILL = "till"
    WEB = "web"
    STAFF = "staff"
    IMPORT = "import"


# ISO 3166-1 alpha-2: the officially assigned codes.
COUNTRIES = frozenset("""
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO
JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR
MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO
RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV
TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
""".split())

PROFILE_FIELDS = ("external_id", "first_name", "last_name", "gender", "birth_date", "address", "phone", "email",
                  "social", "groups")
MAX_NAME = 100
MAX_ADDRESS_LINES = 4
MAX_GROUPS = 50
MAX_SOCIAL = 20
MAX_AGE_YEARS = 130
CONSENT_CLOCK_SKEW = timedelta(minutes=5)  # a consent dated later than this after "now" is refused

_FIELD_NAMES = frozenset(PROFILE_FIELDS)
_GENDERS = frozenset(Gender)
_CHANNELS = frozenset(Channel)
_SOURCES = frozenset(ConsentSource)
_LINE_FIELDS = tuple(f"address.lines.{i}" for i in range(MAX_ADDRESS_LINES + 4))
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE_SEPARATORS = re.compile(r"[\s\-.()/]")
_E164 = re.compile(r"^\+[1-9][0-9]{7,14}$")
_LOCAL_PART = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_DOMAIN_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_TLD = re.compile(r"^([a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
_POSTCODE = re.compile(r"^[A-Z0-9][A-Z0-9 -]{0,15}$")
_GROUP = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_NETWORK = re.compile(r"^[a-z0-9_.-]{1,32}$")
_EXTERNAL_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # printable ASCII, no spaces


# -- errors -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with one field (``field`` None: the profile as a whole)."""

    field: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, str | None]:
        return {"field": self.field, "code": self.code, "message": self.message}


class InvalidProfile(InvalidInput):
    """A profile or consent that may not be recorded; ``problems`` lists every reason."""

    code = "invalid_profile"

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(f"{first.field + ': ' if first.field else ''}{first.message}{more}")

    @property
    def field(self) -> str | None:
        return self.problems[0].field


class DuplicateCustomer(DomainError):
    """Another active customer has this phone, e-mail or external id."""

    code = "duplicate_customer"

    def __init__(self, field: str, message: str | None = None) -> None:
        super().__init__(message or f"another customer has this {field.replace('_', ' ')}")
        self.field = field


class CardAlreadyBound(DomainError):
    """The card belongs to another customer already."""

    code = "card_already_bound"


# -- normalising single fields ----------------------------------------------------------------------


def normalise_phone(text: str) -> str:
    """A mobile number in E.164 (``+`` and 8 to 15 digits, no leading zero): spaces, dashes, dots,
    slashes and parentheses are dropped and a leading ``00`` becomes ``+``. No country-aware parsing:
    a number without its country code is refused."""
    compact = _PHONE_SEPARATORS.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if not compact.isascii() or not _E164.match(compact):
        raise InvalidInput(f"{text!r} is not a mobile number in international form, like +44 7700 900123")
    return compact


def normalise_email(text: str) -> str:
    """An e-mail address with its domain in lower case (an internationalised domain in its ASCII form);
    the local part is kept as written. Refuses what is not ``local@domain.tld``."""
    address = text.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise InvalidInput(f"{text!r} is not an e-mail address")
    if len(local) > 64 or not _LOCAL_PART.match(local):
        raise InvalidInput(f"{text!r}: the part before @ is not a valid mailbox name")
    domain = _mail_domain(domain)
    if domain is None:
        raise InvalidInput(f"{text!r}: the domain is not valid")
    normalised = f"{local}@{domain}"
    if len(normalised) > 254:
        raise InvalidInput(f"{text!r} is longer than 254 characters")
    return normalised


@functools.lru_cache(maxsize=4096)  # a customer file names the same few domains again and again
def _mail_domain(domain: str) -> str | None:
    """The domain in lower-case ASCII, or None if it is not a valid internet domain."""
    domain = domain.rstrip(".").lower()
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels) or not _TLD.match(labels[-1]):
        return None
    return domain


def email_key(email: str) -> str:
    """What makes two e-mail addresses the same customer's: the whole address in lower case."""
    return email.lower()


# -- the profile --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    lines: tuple[str, ...] = ()
    postcode: str | None = None
    city: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2

    def as_dict(self) -> dict[str, Any]:
        return {"lines": list(self.lines), "postcode": self.postcode, "city": self.city, "country": self.country}


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer's profile, validated and normalised (built by :func:`make_profile`)."""

    first_name: str | None = None
    last_name: str | None = None
    gender: Gender = Gender.UNSPECIFIED
    birth_date: date | None = None
    address: Address = Address()
    phone: str | None = None  # E.164
    email: str | None = None  # domain in lower case
    social: tuple[tuple[str, str], ...] = ()  # (network, id), sorted by network
    groups: tuple[str, ...] = ()  # customer group codes, sorted
    external_id: str | None = None  # the customer's id in the system it was imported from

    @property
    def email_key(self) -> str | None:
        return email_key(self.email) if self.email else None

    @property
    def name_key(self) -> str:
        """Last and first name in lower case, what name searches match."""
        return " ".join(n for n in (self.last_name, self.first_name) if n).casefold()

    def as_dict(self) -> dict[str, Any]:
        """The profile as JSON-ready values (which :func:`make_profile` reads back)."""
        return {"external_id": self.external_id, "first_name": self.first_name, "last_name": self.last_name,
                "gender": self.gender.value, "birth_date": self.birth_date.isoformat() if self.birth_date else None,
                "address": self.address.as_dict(), "phone": self.phone, "email": self.email,
                "social": dict(self.social), "groups": list(self.groups)}


class _Problems:
    def __init__(self) -> None:
        self.found: list[Problem] = []

    def add(self, field: str | None, code: str, message: str) -> None:
        self.found.append(Problem(field, code, message))


def _text(value: Any, field: str, problems: _Problems, *, limit: int, code: str | None = None) -> str | None:
    """A free-text field: stripped, empty is None, no control characters, at most ``limit`` characters."""
    if value is None:
        return None
    if not isinstance(value, str):
        problems.add(field, "invalid_type", "must be text")
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > limit or _CONTROL.search(text):
        problems.add(field, code or f"invalid_{field.rpartition('.')[2]}",
                     f"at most {limit} characters, without control characters")
        return None
    return text


def _birth_date(value: Any, today: date, problems: _Problems) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime) or not isinstance(value, date | str):
        problems.add("birth_date", "invalid_birth_date", "a date like 1980-12-31")
        return None
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value.strip())
        except ValueError:
            problems.add("birth_date", "invalid_birth_date", f"{value!r} is not a date like 1980-12-31")
            return None
    if value > today:
        problems.add("birth_date", "birth_date_in_future", "the birth date is in the future")
    elif value.year < today.year - MAX_AGE_YEARS:
        problems.add("birth_date", "birth_date_too_early", f"the birth date is more than {MAX_AGE_YEARS} years ago")
    else:
        return value
    return None


def _address(value: Any, problems: _Problems) -> Address:
    if value is None:
        return Address()
    if isinstance(value, Address):
        value = value.as_dict()
    if not isinstance(value, Mapping):
        problems.add("address", "invalid_type", "an object with lines, postcode, city and country")
        return Address()
    unknown = set(value) - {"lines", "postcode", "city", "country"}
    if unknown:
        problems.add("address", "unknown_field", f"unknown address field(s): {', '.join(sorted(unknown))}")
    raw_lines = value.get("lines") or []
    if isinstance(raw_lines, str) or not isinstance(raw_lines, list | tuple):
        problems.add("address.lines", "invalid_type", "a list of lines")
        raw_lines = []
    lines = []
    for i, line in enumerate(raw_lines):
        text = _text(line, _LINE_FIELDS[i] if i < len(_LINE_FIELDS) else f"address.lines.{i}", problems,
                     limit=MAX_NAME, code="invalid_address_line")
        if text:
            lines.append(text)
    if len(lines) > MAX_ADDRESS_LINES:
        problems.add("address.lines", "too_many_lines", f"at most {MAX_ADDRESS_LINES} address lines")
    postcode = _text(value.get("postcode"), "address.postcode", problems, limit=16)
    if postcode is not None:
        postcode = " ".join(postcode.upper().split())
        if not _POSTCODE.match(postcode):
            problems.add("address.postcode", "invalid_postcode", f"{postcode!r} is not a postcode (letters, digits, "
                         "spaces and dashes)")
            postcode = None
    city = _text(value.get("city"), "address.city", problems, limit=MAX_NAME)
    country = _text(value.get("country"), "address.country", problems, limit=MAX_NAME)
    if country is not None:
        country = country.upper()
        if country not in COUNTRIES:
            problems.add("address.country", "invalid_country", f"{country!r} is not an ISO 3166 country code like GB")
            country = None
    return Address(tuple(lines[:MAX_ADDRESS_LINES]), postcode, city, country)


def _social(value: Any, problems: _Problems) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        problems.add("social", "invalid_type", "an object mapping each network to the customer's id there")
        return ()
    if len(value) > MAX_SOCIAL:
        problems.add("social", "too_many_networks", f"at most {MAX_SOCIAL} networks")
        return ()
    out: dict[str, str] = {}
    for network, ident in value.items():
        name = str(network).strip().lower()
        if not _NETWORK.match(name):
            problems.add(f"social.{network}", "invalid_network", "a network name is 1-32 of a-z 0-9 _ . -")
            continue
        text = _text(ident, f"social.{name}", problems, limit=200, code="invalid_social_id")
        if text is not None:
            out[name] = text
    return tuple(sorted(out.items()))


def _groups(value: Any, problems: _Problems) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str) or not isinstance(value, list | tuple | set | frozenset):
        problems.add("groups", "invalid_type", "a list of customer group codes")
        return ()
    codes = {g.strip() if isinstance(g, str) else g for g in value}
    bad = sorted(str(g) for g in codes if not isinstance(g, str) or not _GROUP.match(g))
    if bad:
        problems.add("groups", "invalid_group", f"not group codes (1-32 of A-Z a-z 0-9 _ . -): {', '.join(bad)}")
        return ()
    if len(codes) > MAX_GROUPS:
        problems.add("groups", "too_many_groups", f"at most {MAX_GROUPS} groups")
        return ()
    return tuple(sorted(codes))


def _normalised(value: Any, field: str, normalise, problems: _Problems, code: str) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        problems.add(field, "invalid_type", "must be text")
        return None
    try:
        return normalise(value)
    except InvalidInput as exc:
        problems.add(field, code, exc.message)
        return None


def make_profile(fields: Mapping[str, Any], today: date) -> Profile:
    """Validate and normalise a profile from its fields (absent or empty: not known). A customer needs
    at least a name, a phone or an e-mail. Raises :class:`InvalidProfile` with every problem found."""
    problems = _Problems()
    if not _FIELD_NAMES.issuperset(fields):
        for name in sorted(set(fields) - _FIELD_NAMES):
            problems.add(name, "unknown_field", f"unknown profile field {name!r}")
    gender = fields.get("gender") or Gender.UNSPECIFIED.value
    if gender not in _GENDERS:
        problems.add("gender", "invalid_gender", f"one of {', '.join(Gender)}")
        gender = Gender.UNSPECIFIED
    external_id = _text(fields.get("external_id"), "external_id", problems, limit=64)
    if external_id is not None and not _EXTERNAL_ID.match(external_id):
        problems.add("external_id", "invalid_external_id", "printable characters without spaces, at most 64")
        external_id = None
    profile = Profile(
        first_name=_text(fields.get("first_name"), "first_name", problems, limit=MAX_NAME),
        last_name=_text(fields.get("last_name"), "last_name", problems, limit=MAX_NAME),
        gender=Gender(gender),
        birth_date=_birth_date(fields.get("birth_date"), today, problems),
        address=_address(fields.get("address"), problems),
        phone=_normalised(fields.get("phone"), "phone", normalise_phone, problems, "invalid_phone"),
        email=_normalised(fields.get("email"), "email", normalise_email, problems, "invalid_email"),
        social=_social(fields.get("social"), problems),
        groups=_groups(fields.get("groups"), problems),
        external_id=external_id,
    )
    if not problems.found and not (profile.first_name or profile.last_name or profile.phone or profile.email):
        problems.add(None, "profile_empty", "a customer needs a name, a phone or an e-mail")
    if problems.found:
        raise InvalidProfile(problems.found)
    return profile


def changed_profile(profile: Profile, changes: Mapping[str, Any], today: date) -> Profile:
    """The profile with ``changes`` applied (a field set to None is cleared), validated as a whole."""
    return make_profile({**profile.as_dict(), **changes}, today)


def profile_diff(before: Profile, after: Profile) -> dict[str, dict[str, Any]]:
    """The fields that differ, each with its value before and after (as JSON-ready values)."""
    old, new = before.as_dict(), after.as_dict()
    return {name: {"before": old[name], "after": new[name]} for name in PROFILE_FIELDS if old[name] != new[name]}


# -- consents -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Consent:
    """A customer's answer for one channel: granted or withdrawn, where and when it was given."""

    channel: Channel
    granted: bool
    source: ConsentSource
    at: datetime

    def __post_init__(self) -> None:
        if self.at.tzinfo is None:
            raise InvalidInput("a consent's time needs its time zone")

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel.value, "granted": self.granted, "source": self.source.value,
                "at": self.at.isoformat()}


def consent(channel: str, granted: bool, source: str, at: datetime) -> Consent:
    """A consent from plain values; InvalidProfile naming the field if one is not valid."""
    problems = _Problems()
    if channel not in _CHANNELS:
        problems.add("consents", "invalid_channel", f"{channel!r} is not one of {', '.join(Channel)}")
    if source not in _SOURCES:
        problems.add(f"consents.{channel}", "invalid_source", f"{source!r} is not one of {', '.join(ConsentSource)}")
    if not isinstance(granted, bool):
        problems.add(f"consents.{channel}", "invalid_granted", "granted is true or false")
    if not isinstance(at, datetime) or at.tzinfo is None:
        problems.add(f"consents.{channel}", "invalid_at", "the time of a consent needs its time zone")
    if problems.found:
        raise InvalidProfile(problems.found)
    return Consent(Channel(channel), granted, ConsentSource(source), at.astimezone(UTC))


def current_consents(history: Iterable[Consent]) -> dict[Channel, Consent]:
    """Each channel's current consent: the one given last (``at``); of two given at the same time,
    the one recorded later (history is in the order it was recorded)."""
    current: dict[Channel, Consent] = {}
    for item in history:
        held = current.get(item.channel)
        if held is None or item.at >= held.at:
            current[item.channel] = item
    return current


def consent_changes(current: Mapping[Channel, Consent], requested: Iterable[Consent],
                    now: datetime) -> tuple[Consent, ...]:
    """Of the requested consents, those that change a channel's current state (a repeat of the current
    answer is no change). One consent per channel per request; none dated in the future or before the
    channel's current consent (InvalidProfile)."""
    problems = _Problems()
    seen: set[Channel] = set()
    changes: list[Consent] = []
    for item in requested:
        field = f"consents.{item.channel.value}"
        held = current.get(item.channel)
        if item.channel in seen:
            problems.add(field, "duplicate_channel", "one consent per channel in a request")
        elif item.at > now + CONSENT_CLOCK_SKEW:
            problems.add(field, "consent_in_future", "the consent is dated in the future")
        elif held is not None and item.at < held.at:
            problems.add(field, "consent_outdated",
                         f"the current consent was given later ({held.at.isoformat()})")
        elif held is None or held.granted != item.granted:
            changes.append(item)
        seen.add(item.channel)
    if problems.found:
        raise InvalidProfile(problems.found)
    return tuple(changes)


# -- CSV import ---------------------------------------------------------------------------------

CSV_COLUMNS = ("external_id", "first_name", "last_name", "gender", "birth_date", "phone", "email",
               "address_line1", "address_line2", "postcode", "city", "country", "groups",
               "consent_mail", "consent_mail_date", "consent_sms", "consent_sms_date",
               "consent_email", "consent_email_date", "card_number")
MAX_ROWS = 1_000_000
_CARD_NUMBER = re.compile(r"^[0-9]{8,19}$")
_YES, _NO = {"1", "true", "yes", "y"}, {"0", "false", "no", "n"}
_GROUP_SEPARATOR = re.compile(r"[;|]")
_CONSENT_COLUMNS = tuple((c, f"consent_{c.value}", f"consent_{c.value}_date") for c in Channel)
_GENDER_LETTERS = {"f": "female", "m": "male", "o": "other", "u": "unspecified"}  # as older systems write them
# A profile problem's field -> the CSV column it came from.
_COLUMN_OF = {"address.lines.0": "address_line1", "address.lines.1": "address_line2", "address.postcode": "postcode",
              "address.city": "city", "address.country": "country"}


@dataclass(frozen=True, slots=True)
class LineProblem:
    """Why one line of a customer file is refused (``field`` None: the line as a whole)."""

    line: int
    field: str | None
    code: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class ImportLine:
    """A valid line: the customer's profile, their consents (source import) and the card to bind."""

    line: int
    profile: Profile
    consents: tuple[Consent, ...] = ()
    card_number: str | None = None


@dataclass(frozen=True, slots=True)
class CustomerFile:
    """A customer file read: its valid lines and the problems of the others. ``fatal``: the file as a
    whole is unreadable (no header, unknown columns, broken quoting) and nothing of it may be imported."""

    customers: tuple[ImportLine, ...]
    problems: tuple[LineProblem, ...]
    rows: int
    fatal: bool = False

    @property
    def invalid_lines(self) -> int:
        return len({p.line for p in self.problems})


def parse_customers_csv(text: str, now: datetime) -> CustomerFile:
    """Read a customer CSV: a header naming its columns (any of :data:`CSV_COLUMNS`, any order), then
    one customer per line. A consent column is 1 or 0 (yes/no, true/false) with an optional date
    (``YYYY-MM-DD`` or an ISO time with its zone; no date: ``now``). Groups are separated by ``;``.
    The same external id, phone, e-mail or card on two lines is a problem of the later line."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""), strict=True)
    customers: list[ImportLine] = []
    problems: list[LineProblem] = []
    seen: dict[tuple[str, str], int] = {}
    rows = 0
    try:
        header, header_line = None, 0
        for record in reader:
            if record and record != [""]:
                header, header_line = [name.strip().lower() for name in record], reader.line_num
                break
        if header is None:
            return CustomerFile((), (LineProblem(1, None, "missing_header", "the file has no header row"),), 0, True)
        bad = [LineProblem(header_line, name or None, "unknown_column",
                           f"unknown column {name!r}; columns are {', '.join(CSV_COLUMNS)}")
               for name in header if name not in CSV_COLUMNS]
        bad += [LineProblem(header_line, name, "duplicate_column", f"column {name!r} appears twice")
                for name in sorted({n for n in header if header.count(n) > 1})]
        if bad:
            return CustomerFile((), tuple(bad), 0, True)
        start = reader.line_num + 1
        for record in reader:
            number, start = start, reader.line_num + 1
            if not record or record == [""]:
                continue
            rows += 1
            if rows > MAX_ROWS:
                return CustomerFile((), (LineProblem(number, None, "too_many_lines",
                                                     f"a customer file has at most {MAX_ROWS} lines"),), rows, True)
            if len(record) != len(header):
                problems.append(LineProblem(number, None, "wrong_field_count",
                                            f"the line has {len(record)} fields, the header {len(header)}"))
                continue
            line, found = _import_line(number, dict(zip(header, [v.strip() for v in record], strict=True)), now)
            if line is not None:
                found += _duplicates_in_file(line, seen)
            if found:
                problems.extend(found)
            else:
                customers.append(line)
    except csv.Error as exc:
        problems.append(LineProblem(reader.line_num, None, "malformed_csv", f"not readable as CSV: {exc}"))
        return CustomerFile(tuple(customers), tuple(problems), rows, True)
    return CustomerFile(tuple(customers), tuple(problems), rows)


def _import_line(number: int, fields: dict[str, str], now: datetime) -> tuple[ImportLine | None, list[LineProblem]]:
    found: list[LineProblem] = []
    raw = {name: fields.get(name) for name in ("external_id", "first_name", "last_name", "gender", "birth_date",
                                               "phone", "email")}
    gender = (raw["gender"] or "").lower()
    raw["gender"] = _GENDER_LETTERS.get(gender, gender) or None
    raw["address"] = {"lines": [fields.get("address_line1", ""), fields.get("address_line2", "")],
                      "postcode": fields.get("postcode"), "city": fields.get("city"), "country": fields.get("country")}
    raw["groups"] = [g for g in _GROUP_SEPARATOR.split(fields.get("groups", "")) if g.strip()]
    profile = None
    try:
        profile = make_profile(raw, now.date())
    except InvalidProfile as exc:
        found += [LineProblem(number, _COLUMN_OF.get(p.field, p.field), p.code, p.message) for p in exc.problems]
    consents = []
    for channel, column, date_column in _CONSENT_COLUMNS:
        answer, when = fields.get(column, "").lower(), fields.get(date_column, "")
        if not answer:
            if when:
                found.append(LineProblem(number, column, "missing_consent", "a consent date without 1 or 0"))
            continue
        if answer not in _YES | _NO:
            found.append(LineProblem(number, column, "invalid_consent", f"{answer!r} is not 1 or 0"))
            continue
        at = _consent_time(when, now)
        if at is None:
            found.append(LineProblem(number, date_column, "invalid_consent_date",
                                     f"{when!r} is not a date like 2024-01-31 or a time with its zone"))
        elif at > now + CONSENT_CLOCK_SKEW:
            found.append(LineProblem(number, date_column, "consent_in_future",
                                     "the consent is dated in the future"))
        else:
            consents.append(Consent(channel, answer in _YES, ConsentSource.IMPORT, at))
    card = fields.get("card_number") or None
    if card is not None and not _CARD_NUMBER.match(card):
        found.append(LineProblem(number, "card_number", "invalid_card_number", "a card number is 8 to 19 digits"))
    if found or profile is None:
        return None, found
    return ImportLine(number, profile, tuple(consents), card), found


def _consent_time(text: str, now: datetime) -> datetime | None:
    if not text:
        return now
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
        at = datetime.fromisoformat(text)
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo is not None else None


def _duplicates_in_file(line: ImportLine, seen: dict[tuple[str, str], int]) -> list[LineProblem]:
    found = []
    keys = {"external_id": line.profile.external_id, "phone": line.profile.phone, "email": line.profile.email_key,
            "card_number": line.card_number}
    for field, key in keys.items():
        if key is None:
            continue
        first = seen.get((field, key))
        if first is not None:
            found.append(LineProblem(line.line, field, "duplicate_in_file",
                                     f"the {field.replace('_', ' ')} of line {first} again"))
    if not found:
        seen.update({(field, key): line.line for field, key in keys.items() if key is not None})
    return found


def customers_csv(lines: Iterable[ImportLine]) -> str:
    """Customers in the import format (every column), which :func:`parse_customers_csv` reads back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in lines:
        p = item.profile
        given = {c.channel: c for c in item.consents}
        consents = []
        for channel in Channel:
            c = given.get(channel)
            consents += ["", ""] if c is None else ["1" if c.granted else "0", c.at.isoformat()]
        address_lines = list(p.address.lines[:2]) + [""] * (2 - min(len(p.address.lines), 2))
        writer.writerow([p.external_id or "", p.first_name or "", p.last_name or "", p.gender.value,
                         p.birth_date.isoformat() if p.birth_date else "", p.phone or "", p.email or "",
                         *address_lines, p.address.postcode or "", p.address.city or "", p.address.country or "",
                         ";".join(p.groups), *consents, item.card_number or ""])
    return out.getvalue()
