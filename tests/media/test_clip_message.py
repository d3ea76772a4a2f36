"""Caller-ID message layer: byte-exact SDMF/MDMF, strict decoding, DTMF CLIP strings."""

from __future__ import annotations

from datetime import datetime

import pytest

from firmware.media.clip import (
    Absence,
    CallerIdInfo,
    ClipDateTime,
    ClipError,
    DtmfClipStyle,
    MessageFormat,
    caller_id_info,
    checksum,
    decode_dtmf_clip,
    decode_message,
    encode_dtmf_clip,
    encode_message,
    message_complete,
    to_display_ascii,
)

# The classic Bell SDMF example: 30 September 12:24, number 609-555-1212.
# Sum: 0x04 + 0x12 = 22; the 18 ASCII digits "09301224" "6095551212" = 18 * 48 + digit sum
# (0+9+3+0+1+2+2+4 + 6+0+9+5+5+5+1+2+1+2 = 57) = 921; 22 + 921 = 943 = 3 * 256 + 175,
# so the checksum is 256 - 175 = 81 = 0x51.
SDMF_EXAMPLE = bytes.fromhex("0412" + "3039333031323234" + "36303935353531323132" + "51")

# ETSI / Bell MDMF: date 01-02 03:04, number 5551234567, name "John Doe".
# Sum: headers 0x80 + 0x20 + (1 + 8) + (2 + 10) + (7 + 8) = 196; "01020304" = 8 * 48 + 10 = 394;
# "5551234567" = 10 * 48 + 43 = 523; "John Doe" = 74+111+104+110+32+68+111+101 = 711;
# total 1824 = 7 * 256 + 32, checksum 256 - 32 = 224 = 0xe0.
MDMF_EXAMPLE = bytes.fromhex(
    "8020"
    + "0108"
    + "3031303230333034"
    + "020a"
    + "35353531323334353637"
    + "0708"
    + "4a6f686e20446f65"
    + "e0"
)

# MDMF, number and name withheld: 80 06 04 01 'P' 08 01 'P'; sum 0x80+6+4+1+80+8+1+80 = 308
# = 256 + 52, checksum 256 - 52 = 204 = 0xcc.
MDMF_PRIVATE = bytes.fromhex("8006" + "040150" + "080150" + "cc")

JOHN = CallerIdInfo(number="5551234567", name="John Doe", date_time=ClipDateTime(1, 2, 3, 4))


def _with_checksum(head: bytes) -> bytes:
    return head + bytes([-sum(head) & 0xFF])


def test_sdmf_example_is_byte_exact_and_decodes():
    info = CallerIdInfo(number="6095551212", date_time=ClipDateTime(9, 30, 12, 24))
    assert encode_message(info, MessageFormat.BELL_SDMF) == SDMF_EXAMPLE
    assert decode_message(SDMF_EXAMPLE) == info
    assert checksum(SDMF_EXAMPLE[:-1]) == 0x51


@pytest.mark.parametrize("message_format", [MessageFormat.ETSI, MessageFormat.BELL_MDMF])
def test_mdmf_example_is_byte_exact_and_decodes(message_format):
    assert encode_message(JOHN, message_format) == MDMF_EXAMPLE
    assert decode_message(MDMF_EXAMPLE) == JOHN


def test_withheld_number_and_name_are_reason_p():
    info = CallerIdInfo(number_absence=Absence.PRIVATE, name_absence=Absence.PRIVATE)
    assert encode_message(info, MessageFormat.ETSI) == MDMF_PRIVATE
    assert decode_message(MDMF_PRIVATE) == info


def test_sdmf_reasons_are_one_letter():
    when = ClipDateTime(12, 31, 23, 59)
    for absence in Absence:
        info = CallerIdInfo(number_absence=absence, date_time=when)
        message = encode_message(info, MessageFormat.BELL_SDMF)
        assert message[:-1] == bytes([0x04, 9]) + b"12312359" + absence.value.encode()
        assert decode_message(message) == info


@pytest.mark.parametrize("message_format", list(MessageFormat))
@pytest.mark.parametrize(
    ("number", "name", "private"),
    [
        ("0123456789", "Jane Doe", False),
        ("112", None, False),
        (None, "Someone", False),
        ("0045123", None, True),
        ("sip:alice@example.org", "Alice", False),  # not a number: unavailable
    ],
)
def test_round_trip_every_format(message_format, number, name, private):
    info = caller_id_info(
        number,
        name,
        private=private,
        when=datetime(2026, 2, 28, 8, 5),
        message_format=message_format,
    )
    message = encode_message(info, message_format)
    assert message_complete(message) and not message_complete(message[:-1])
    assert sum(message) % 256 == 0
    assert decode_message(message) == info
    if private:
        assert info.number is None and info.number_absence is Absence.PRIVATE
    elif number and number.isdigit():
        assert info.number == number
    else:
        assert info.number is None and info.number_absence is Absence.UNAVAILABLE


def test_every_single_corrupted_byte_is_refused():
    for message in (SDMF_EXAMPLE, MDMF_EXAMPLE, MDMF_PRIVATE):
        for position in range(len(message)):
            for flip in range(1, 256):
                corrupted = bytearray(message)
                corrupted[position] ^= flip
                with pytest.raises(ClipError):
                    decode_message(bytes(corrupted))


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (bytes([0x04, 10]) + b"09301224" + b"6A", "number field"),
        (bytes([0x04, 8]) + b"09301224", "no number field"),
        (bytes([0x04, 12]) + b"13301224" + b"1234", "no such date"),
        (bytes([0x04, 12]) + b"02301224" + b"1234", "no such date"),
        (bytes([0x04, 12]) + b"09302461" + b"1234", "no such time"),
        (bytes([0x80, 5, 0x02, 4]) + b"555", "inconsistent length"),
        (bytes([0x80, 4, 0x02, 1]) + b"5" + bytes([0x07]), "parameter header"),
        (bytes([0x80, 6, 0x02, 1]) + b"5" + bytes([0x02, 1]) + b"6", "appears twice"),
        (bytes([0x80, 6, 0x02, 1]) + b"5" + bytes([0x04, 1]) + b"P", "either a number"),
        (bytes([0x80, 3, 0x04, 1]) + b"X", "reason code"),
        (bytes([0x80, 4, 0x07, 2]) + b"A\x07", "control characters"),
        (bytes([0x80, 2, 0x02, 0]), "inconsistent length"),
        (bytes([0x82, 3, 0x0B, 1, 0xFF]), "not a caller ID"),
    ],
)
def test_well_summed_but_malformed_messages_are_refused(head, reason):
    with pytest.raises(ClipError, match=reason):
        decode_message(_with_checksum(head))


def test_length_byte_must_match_and_truncation_is_refused():
    with pytest.raises(ClipError, match="length byte"):
        decode_message(MDMF_EXAMPLE + b"\x00")
    with pytest.raises(ClipError, match="length byte"):
        decode_message(MDMF_EXAMPLE[:-2])
    with pytest.raises(ClipError, match="truncated"):
        decode_message(b"\x80\x00")


def test_unknown_parameters_are_skipped():
    # ETSI call type (0x11, 1 = voice) and called number (0x03) before the number.
    head = bytes([0x80, 12, 0x11, 1, 1, 0x03, 3]) + b"201" + bytes([0x02, 2]) + b"42"
    assert decode_message(_with_checksum(head)) == CallerIdInfo(number="42")


def test_a_leading_plus_is_a_number_but_nothing_else_is():
    assert decode_message(_with_checksum(bytes([0x80, 5, 0x02, 3]) + b"+49")).number == "+49"
    for bad in (b"4+9", b"++9", b"49 ", b"+"):
        head = bytes([0x80, 2 + len(bad), 0x02, len(bad)]) + bad
        with pytest.raises(ClipError):
            decode_message(_with_checksum(head))


def test_caller_id_info_never_cuts_a_number_and_fits_names():
    long_number = "1" * 16
    bell = caller_id_info(long_number, "Søren Ærø Müller-Lüdenscheidt", message_format="bell_mdmf")
    assert bell.number is None and bell.number_absence is Absence.UNAVAILABLE
    assert bell.name == "Soren AEro Mull"  # 15 characters, transliterated
    etsi = caller_id_info(long_number, "Søren Ærø", message_format=MessageFormat.ETSI)
    assert etsi.number == long_number and etsi.name == "Soren AEro"
    sdmf = caller_id_info("+4912345", "Name", message_format=MessageFormat.BELL_SDMF)
    assert sdmf.number is None and sdmf.name is None and sdmf.name_absence is None
    assert caller_id_info("", None).number_absence is Absence.UNAVAILABLE
    assert to_display_ascii("Zoë 北京\t") == "Zoe ???"


def test_encoder_refuses_what_the_format_cannot_carry():
    with pytest.raises(ValueError, match="date and time"):
        encode_message(CallerIdInfo(number="123"), MessageFormat.BELL_SDMF)
    with pytest.raises(ValueError, match="exceeds"):
        encode_message(CallerIdInfo(number="1" * 16), MessageFormat.BELL_MDMF)
    with pytest.raises(ValueError, match="not ASCII"):
        encode_message(CallerIdInfo(name="Zoë"), MessageFormat.ETSI)
    with pytest.raises(ValueError, match="either a number"):
        CallerIdInfo(number="1", number_absence=Absence.PRIVATE)
    with pytest.raises(ValueError, match="digits"):
        CallerIdInfo(number="12a")


def test_date_time_from_local_time_and_checks():
    assert ClipDateTime.from_datetime(datetime(2026, 2, 29 - 1, 23, 7)).text() == "02282307"
    assert ClipDateTime.parse("02291200") == ClipDateTime(2, 29, 12, 0)  # leap day allowed
    for bad in ("0230120", "0230 200", "02301200", "00011200", "01010060"):
        with pytest.raises(ClipError):
            ClipDateTime.parse(bad)


def test_dtmf_clip_strings_of_both_styles():
    number = CallerIdInfo(number="4512345678")
    assert encode_dtmf_clip(number, DtmfClipStyle.ETSI) == "A4512345678C"
    assert encode_dtmf_clip(number, DtmfClipStyle.DANISH) == "A4512345678#"
    private = CallerIdInfo(number_absence=Absence.PRIVATE)
    unavailable = CallerIdInfo(number_absence=Absence.UNAVAILABLE)
    assert encode_dtmf_clip(private, DtmfClipStyle.ETSI) == "B10C"
    assert encode_dtmf_clip(unavailable, DtmfClipStyle.ETSI) == "B00C"
    assert encode_dtmf_clip(private, DtmfClipStyle.DANISH) == "D1#"
    assert encode_dtmf_clip(unavailable, DtmfClipStyle.DANISH) == "D3#"
    with pytest.raises(ValueError, match="20 digits"):
        encode_dtmf_clip(CallerIdInfo(number="+4512"))


@pytest.mark.parametrize(
    ("digits", "expected"),
    [
        ("A4512345678C", CallerIdInfo(number="4512345678")),
        ("A4512345678#", CallerIdInfo(number="4512345678")),
        ("B00C", CallerIdInfo(number_absence=Absence.UNAVAILABLE)),
        ("B10C", CallerIdInfo(number_absence=Absence.PRIVATE)),
        ("B01C", CallerIdInfo(number_absence=Absence.PRIVATE)),
        ("D1#", CallerIdInfo(number_absence=Absence.PRIVATE)),
        ("D2#", CallerIdInfo(number_absence=Absence.UNAVAILABLE)),
        ("D3#", CallerIdInfo(number_absence=Absence.UNAVAILABLE)),
    ],
)
def test_dtmf_clip_decodes(digits, expected):
    assert decode_dtmf_clip(digits) == expected


@pytest.mark.parametrize(
    "digits",
    ["", "AC", "A123", "12345C", "A12B4C", "A12*4C", "B99C", "D4#", "DA#", "A" + "1" * 21 + "C"],
)
def test_malformed_dtmf_clip_is_refused(digits):
    with pytest.raises(ClipError):
        decode_dtmf_clip(digits)
