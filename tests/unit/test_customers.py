"""Customer profiles, consents and the customer CSV format (pure): normalisation, every problem named
with its field, consent history to current state, and files read line by line."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import InvalidInput
from core.loyalty.customers import (
    COUNTRIES,
    Address,
    Channel,
    Consent,
    ConsentSource,
    Gender,
    ImportLine,
    InvalidProfile,
    Profile,
    changed_profile,
    consent,
    consent_changes,
    current_consents,
    customers_csv,
    email_key,
    make_profile,
    normalise_email,
    normalise_phone,
    parse_customers_csv,
    profile_diff,
)

TODAY = date(2026, 6, 15)
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
MAIL, SMS, EMAIL = Channel.MAIL, Channel.SMS, Channel.EMAIL
WEB, TILL, STAFF = ConsentSource.WEB, ConsentSource.TILL, ConsentSource.STAFF


def problems(fields: dict, today: date = TODAY) -> list[tuple[str | None, str]]:
    with pytest.raises(InvalidProfile) as refused:
        make_profile(fields, today)
    return [(p.field, p.code) for p in refused.value.problems]


# -- single fields ------------------------------------------------------------------------------


@pytest.mark.parametrize("written, e164", [
    ("+44 7700 900123", "+447700900123"),
    ("+44-7700-900-123", "+447700900123"),
    ("0044 (7700) 900.123", "+447700900123"),
    ("+1 415 555 2671", "+14155552671"),
    ("+49/170/1234567", "+491701234567"),
    ("+12345678", "+12345678"),  # 8 digits: the shortest
    ("+123456789012345", "+123456789012345"),  # 15: the longest
])
def test_phones_normalise_to_e164(written, e164):
    assert normalise_phone(written) == e164


@pytest.mark.parametrize("written", [
    "07700 900123",  # no country code: not guessed
    "+1234567",  # 7 digits
    "+1234567890123456",  # 16 digits
    "+0447700900123",  # country codes do not start with 0
    "+44 7700 9OO123",  # letters
    "+٤٤٧٧٠٠٩٠٠١٢٣",  # digits of another script
    "+44 7700 900123 ext 4",
    "",
])
def test_phones_that_are_refused(written):
    with pytest.raises(InvalidInput):
        normalise_phone(written)


@pytest.mark.parametrize("written, normalised", [
    ("Anna.Smith@Example.COM", "Anna.Smith@example.com"),  # the mailbox keeps its case, the domain does not
    ("  anna@example.co.uk ", "anna@example.co.uk"),
    ("o'brien+news@mail.example.ie.", "o'brien+news@mail.example.ie"),
    ("jurgen@Bücher.de", "jurgen@xn--bcher-kva.de"),  # an internationalised domain in its ASCII form
])
def test_emails_normalise(written, normalised):
    assert normalise_email(written) == normalised


@pytest.mark.parametrize("written", [
    "anna", "anna@", "@example.com", "anna@example", "anna@@example.com", "an..na@example.com", ".anna@example.com",
    "anna@-example.com", "anna@example.c", "anna smith@example.com", "anna@exa_mple.com", "a" * 65 + "@example.com",
    "anna@" + "a" * 250 + ".com",
])
def test_emails_that_are_refused(written):
    with pytest.raises(InvalidInput):
        normalise_email(written)


def test_e_mail_identity_ignores_case():
    assert email_key(normalise_email("Anna.Smith@EXAMPLE.com")) == email_key(normalise_email("anna.smith@example.COM"))


def test_the_country_list_is_iso_3166_alpha_2():
    assert len(COUNTRIES) == 249 and {"GB", "DE", "US", "IE", "CZ", "AX", "SS"} <= COUNTRIES
    assert not {"UK", "EU", "XX", "GBR"} & COUNTRIES


# -- profiles -----------------------------------------------------------------------------------


def test_a_profile_is_normalised():
    profile = make_profile({
        "first_name": "  Anna ", "last_name": "Smith", "gender": "female", "birth_date": "1985-04-12",
        "address": {"lines": [" 1 High Street ", "", "Flat 2"], "postcode": "sw1a   1aa", "city": "London",
                    "country": "gb"},
        "phone": "+44 7700 900123", "email": "Anna@Example.com", "social": {" Instagram ": "@anna"},
        "groups": ["VIP", "STAFF", "VIP"], "external_id": "OLD-1"}, TODAY)
    assert profile == Profile(
        first_name="Anna", last_name="Smith", gender=Gender.FEMALE, birth_date=date(1985, 4, 12),
        address=Address(("1 High Street", "Flat 2"), "SW1A 1AA", "London", "GB"), phone="+447700900123",
        email="Anna@example.com", social=(("instagram", "@anna"),), groups=("STAFF", "VIP"), external_id="OLD-1")
    assert (profile.email_key, profile.name_key) == ("anna@example.com", "smith anna")
    assert make_profile(profile.as_dict(), TODAY) == profile  # what a profile says of itself reads back the same


def test_every_problem_is_named_with_its_field():
    assert problems({"first_name": "x" * 101, "gender": "f", "birth_date": "12/04/1985", "phone": "12345",
                     "email": "anna@", "address": {"lines": ["ok", "bad\x00line"], "postcode": "SW1A 1AA!",
                                                   "country": "UK", "street": "x"},
                     "social": {"My Space": "x"}, "groups": ["VIP", "has space"], "external_id": "has space",
                     "nickname": "A"}) == [
        ("nickname", "unknown_field"), ("gender", "invalid_gender"), ("external_id", "invalid_external_id"),
        ("first_name", "invalid_first_name"), ("birth_date", "invalid_birth_date"), ("address", "unknown_field"),
        ("address.lines.1", "invalid_address_line"), ("address.postcode", "invalid_postcode"),
        ("address.country", "invalid_country"), ("phone", "invalid_phone"), ("email", "invalid_email"),
        ("social.My Space", "invalid_network"), ("groups", "invalid_group")]


@pytest.mark.parametrize("fields, expected", [
    ({}, [(None, "profile_empty")]),
    ({"gender": "male", "birth_date": "1980-01-01", "address": {"city": "Leeds"}}, [(None, "profile_empty")]),
    ({"first_name": "A", "birth_date": "2026-06-16"}, [("birth_date", "birth_date_in_future")]),
    ({"first_name": "A", "birth_date": "1895-12-31"}, [("birth_date", "birth_date_too_early")]),
    ({"first_name": "A", "address": {"lines": ["1", "2", "3", "4", "5"]}}, [("address.lines", "too_many_lines")]),
    ({"first_name": "A", "groups": [f"G{i}" for i in range(51)]}, [("groups", "too_many_groups")]),
    ({"first_name": "A", "groups": "VIP"}, [("groups", "invalid_type")]),
    ({"first_name": 7}, [("first_name", "invalid_type")]),
])
def test_profiles_that_are_refused(fields, expected):
    assert problems(fields) == expected


@pytest.mark.parametrize("fields", [
    {"first_name": "Anna"}, {"last_name": "Smith"}, {"phone": "+447700900123"}, {"email": "a@example.com"},
    {"first_name": "A", "birth_date": "2026-06-15"}, {"first_name": "A", "birth_date": date(1896, 1, 1)},
])
def test_a_name_a_phone_or_an_e_mail_is_enough(fields):
    assert make_profile(fields, TODAY)


def test_changes_apply_to_a_profile_and_say_what_changed():
    before = make_profile({"first_name": "Anna", "last_name": "Smith", "phone": "+447700900123",
                           "groups": ["VIP"], "address": {"city": "London", "country": "GB"}}, TODAY)
    after = changed_profile(before, {"last_name": "Brown", "phone": None, "groups": ["VIP", "GOLD"],
                                     "email": "ANNA@EXAMPLE.COM"}, TODAY)
    assert (after.first_name, after.last_name, after.phone, after.email, after.address.city) == (
        "Anna", "Brown", None, "ANNA@example.com", "London")
    assert profile_diff(before, after) == {
        "last_name": {"before": "Smith", "after": "Brown"}, "phone": {"before": "+447700900123", "after": None},
        "email": {"before": None, "after": "ANNA@example.com"},
        "groups": {"before": ["VIP"], "after": ["GOLD", "VIP"]}}
    assert profile_diff(before, changed_profile(before, {"phone": "0044 7700 900 123"}, TODAY)) == {}
    with pytest.raises(InvalidProfile) as refused:  # a change may not leave a profile with nothing in it
        changed_profile(make_profile({"phone": "+447700900123"}, TODAY), {"phone": None}, TODAY)
    assert refused.value.problems[0].code == "profile_empty"


# -- consents -----------------------------------------------------------------------------------


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 6, day, hour, tzinfo=UTC)


def test_the_consent_given_last_is_the_current_one():
    history = [Consent(SMS, True, TILL, at(1)), Consent(MAIL, True, WEB, at(2)), Consent(SMS, False, WEB, at(3)),
               Consent(SMS, True, STAFF, at(2)),  # recorded later, given earlier: history, not current
               Consent(MAIL, False, STAFF, at(2))]  # given at the same time as the mail consent: recorded later wins
    current = current_consents(history)
    assert current == {SMS: Consent(SMS, False, WEB, at(3)), MAIL: Consent(MAIL, False, STAFF, at(2))}
    assert EMAIL not in current and current_consents([]) == {}


@pytest.mark.parametrize("requested, recorded", [
    ([Consent(SMS, True, WEB, at(5))], [(SMS, True)]),  # a new answer
    ([Consent(MAIL, True, WEB, at(5))], []),  # the same answer again: no change
    ([Consent(MAIL, False, WEB, at(5)), Consent(EMAIL, True, WEB, at(5))], [(MAIL, False), (EMAIL, True)]),
    ([Consent(MAIL, False, WEB, at(2))], [(MAIL, False)]),  # at the same time as the current: later wins
])
def test_only_changes_are_recorded(requested, recorded):
    current = {MAIL: Consent(MAIL, True, TILL, at(2))}
    assert [(c.channel, c.granted) for c in consent_changes(current, requested, at(10))] == recorded


@pytest.mark.parametrize("requested, code", [
    ([Consent(MAIL, False, WEB, at(1))], "consent_outdated"),
    ([Consent(SMS, True, WEB, at(10) + timedelta(minutes=6))], "consent_in_future"),
    ([Consent(SMS, True, WEB, at(5)), Consent(SMS, False, WEB, at(5))], "duplicate_channel"),
])
def test_consents_that_are_refused(requested, code):
    with pytest.raises(InvalidProfile) as refused:
        consent_changes({MAIL: Consent(MAIL, True, TILL, at(2))}, requested, at(10))
    assert refused.value.problems[0].code == code


def test_a_consent_from_plain_values():
    assert consent("sms", True, "till", datetime(2026, 6, 1, 11, tzinfo=UTC)) == Consent(SMS, True, TILL, at(1, 11))
    for args, field in ((("fax", True, "web", at(1)), "consents"), (("sms", True, "phone", at(1)), "consents.sms"),
                        (("sms", True, "web", datetime(2026, 6, 1)), "consents.sms"),
                        (("sms", "yes", "web", at(1)), "consents.sms")):
        with pytest.raises(InvalidProfile) as refused:
            consent(*args)
        assert refused.value.field == field
    with pytest.raises(InvalidInput):
        Consent(SMS, True, WEB, datetime(2026, 6, 1))


@given(st.lists(st.tuples(st.sampled_from(list(Channel)), st.booleans(), st.integers(0, 10**6)), max_size=30))
def test_the_current_state_does_not_depend_on_the_order_of_distinct_times(answers):
    history = [Consent(ch, granted, WEB, NOW + timedelta(seconds=s)) for ch, granted, s in answers]
    times = [(c.channel, c.at) for c in history]
    if len(set(times)) == len(times):
        assert current_consents(history) == current_consents(reversed(history))


# -- the CSV format -----------------------------------------------------------------------------

HEADER = ("external_id,first_name,last_name,gender,birth_date,phone,email,address_line1,address_line2,postcode,"
          "city,country,groups,consent_mail,consent_mail_date,consent_sms,consent_sms_date,consent_email,"
          "consent_email_date,card_number\n")


def row(**values: str) -> str:
    """A line of the file with every column: those given, the others empty."""
    return ",".join(values.get(c, "") for c in HEADER.strip().split(",")) + "\n"


def test_a_customer_file_is_read_line_by_line():
    card = "6034000000000001"
    parsed = parse_customers_csv(HEADER + "".join([
        row(external_id="C-1", first_name="Anna", last_name="Smith", gender="F", birth_date="1985-04-12",
            phone="+44 7700 900123", email="Anna@Example.com", address_line1="1 High St", postcode="sw1a 1aa",
            city="London", country="gb", groups="VIP;GOLD|VIP", consent_mail="1", consent_mail_date="2019-05-01",
            consent_sms="0", consent_sms_date="2020-01-02T10:00:00+02:00", card_number=card),    # line 2
        "\n",                                                                                     # 3: blank
        row(external_id="C-2", first_name="Bob", gender="m", consent_sms="yes"),                   # 4
        row(external_id="C-3", first_name="Carl", gender="x", birth_date="31/12/1980", phone="12345", country="XX",
            consent_mail="2", consent_email_date="2020-01-01", card_number="12"),                   # 5
        row(external_id="C-4", first_name="Dora", phone="+447700900123", card_number=card),        # 6
        row(external_id="C-1", first_name="Eve"),                                                  # 7
        row(external_id="C-6", first_name="Finn", consent_mail="1", consent_mail_date="2026-06-16"),  # 8
        "C-7,Gus\n"]), NOW)                                                                        # 9
    assert parsed.rows == 7 and not parsed.fatal and parsed.invalid_lines == 5
    anna, bob = parsed.customers
    assert anna == ImportLine(2, make_profile({
        "external_id": "C-1", "first_name": "Anna", "last_name": "Smith", "gender": "female",
        "birth_date": "1985-04-12", "phone": "+447700900123", "email": "Anna@example.com",
        "address": {"lines": ["1 High St"], "postcode": "SW1A 1AA", "city": "London", "country": "GB"},
        "groups": ["GOLD", "VIP"]}, TODAY), (
        Consent(MAIL, True, ConsentSource.IMPORT, datetime(2019, 5, 1, tzinfo=UTC)),
        Consent(SMS, False, ConsentSource.IMPORT, datetime(2020, 1, 2, 8, tzinfo=UTC))), card)
    # No date: the consent counts from the import.
    assert (bob.line, bob.profile.gender, bob.consents) == (4, Gender.MALE,
                                                            (Consent(SMS, True, ConsentSource.IMPORT, NOW),))
    assert [(p.line, p.field, p.code) for p in parsed.problems] == [
        (5, "gender", "invalid_gender"), (5, "birth_date", "invalid_birth_date"), (5, "country", "invalid_country"),
        (5, "phone", "invalid_phone"), (5, "consent_mail", "invalid_consent"), (5, "consent_email", "missing_consent"),
        (5, "card_number", "invalid_card_number"),
        (6, "phone", "duplicate_in_file"), (6, "card_number", "duplicate_in_file"),
        (7, "external_id", "duplicate_in_file"),
        (8, "consent_mail_date", "consent_in_future"),
        (9, None, "wrong_field_count")]
    assert parsed.problems[7].message == "the phone of line 2 again"


@pytest.mark.parametrize("text, code", [
    ("", "missing_header"),
    ("\n\n", "missing_header"),
    ("id,name\n1,x\n", "unknown_column"),
    ("first_name,First_Name\na,b\n", "duplicate_column"),
    ('external_id,first_name\nC-1,"Anna\n', "malformed_csv"),
])
def test_unreadable_files_are_fatal(text, code):
    parsed = parse_customers_csv(text, NOW)
    assert parsed.fatal and parsed.problems[0].code == code and parsed.customers == ()


def test_any_subset_of_columns_in_any_order():
    parsed = parse_customers_csv("\ufeffemail,First_Name\r\nx@example.com,Xena\r\n", NOW)
    assert [(c.profile.first_name, c.profile.email) for c in parsed.customers] == [("Xena", "x@example.com")]


names = st.text(st.characters(codec="utf-8", categories=["L", "N", "Zs", "P"]), min_size=1, max_size=30).filter(
    lambda s: s.strip() != "" and s == s.strip())
profiles = st.builds(
    lambda first, last, gender, born, phone, email, groups, ext: make_profile(
        {"first_name": first, "last_name": last, "gender": gender.value, "birth_date": born, "phone": phone,
         "email": email, "groups": groups, "external_id": ext}, TODAY),
    names, st.none() | names, st.sampled_from(list(Gender)), st.none() | st.dates(date(1900, 1, 1), TODAY),
    st.none() | st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True),
    st.none() | st.from_regex(r"[a-z0-9]{1,10}(\.[A-Za-z0-9]{1,5})?@[a-z]{1,10}\.(com|de|co\.uk)", fullmatch=True),
    st.lists(st.from_regex(r"[A-Z0-9_.-]{1,8}", fullmatch=True), max_size=3),
    st.none() | st.from_regex(r"[A-Z]{1,3}-[0-9]{1,6}", fullmatch=True))
consents = st.lists(st.builds(lambda ch, granted, days: Consent(ch, granted, ConsentSource.IMPORT,
                                                                NOW - timedelta(days=days)),
                              st.sampled_from(list(Channel)), st.booleans(), st.integers(0, 5000)),
                    max_size=3, unique_by=lambda c: c.channel)


@given(st.lists(st.tuples(profiles, consents), max_size=5))
def test_a_written_file_reads_back_the_same(customers):
    lines = [ImportLine(i + 2, p, tuple(sorted(c, key=lambda x: list(Channel).index(x.channel))))
             for i, (p, c) in enumerate(customers)]
    parsed = parse_customers_csv(customers_csv(lines), NOW)
    keys = [(c.profile.external_id, c.profile.phone, c.profile.email_key) for c in lines]
    unique = all(len({k[i] for k in keys if k[i]}) == len([k for k in keys if k[i]]) for i in range(3))
    if unique:
        assert parsed.problems == () and parsed.customers == tuple(lines)
    else:
        assert {p.code for p in parsed.problems} == {"duplicate_in_file"}
