"""Named sounds in one flat buffer (firmware/media/soundbank.py)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware.media.soundbank import Sound, SoundBank


def test_added_sounds_are_found_by_name_at_their_own_offsets() -> None:
    bank = SoundBank()
    dial = bank.add("dial", np.arange(10), loop=True)
    beep = bank.add("beep", [[1, 2], [3, 4]], loop=False)  # any shape is flattened
    assert dial == Sound("dial", 0, 10, True)
    assert beep == Sound("beep", 10, 4, False)
    assert bank.get("dial") is dial
    assert bank.get("beep") is beep
    assert "dial" in bank and "beep" in bank
    assert "busy" not in bank
    assert bank.names == ["beep", "dial"]
    assert bank.samples.dtype == np.int16
    np.testing.assert_array_equal(
        bank.samples[dial.offset : dial.offset + dial.length], np.arange(10)
    )
    np.testing.assert_array_equal(
        bank.samples[beep.offset : beep.offset + beep.length], [1, 2, 3, 4]
    )


def test_unknown_sound_raises_key_error_naming_it() -> None:
    bank = SoundBank()
    with pytest.raises(KeyError, match="ringback"):
        bank.get("ringback")


def test_empty_sound_is_rejected() -> None:
    bank = SoundBank()
    with pytest.raises(ValueError, match="empty"):
        bank.add("silence", np.zeros(0, dtype=np.int16), loop=True)
    assert "silence" not in bank
    assert bank.samples.size == 0


def test_replacing_a_name_points_it_at_the_new_samples_and_keeps_others() -> None:
    bank = SoundBank()
    old = bank.add("dial", np.full(5, 1), loop=True)
    other = bank.add("busy", np.full(3, 2), loop=True)
    new = bank.add("dial", np.full(7, 9), loop=False)
    assert bank.get("dial") == new
    assert new.offset != old.offset and new.length == 7 and not new.loop
    np.testing.assert_array_equal(bank.samples[new.offset : new.offset + 7], np.full(7, 9))
    # Existing offsets stay valid (a mixer may still be playing the old sound).
    np.testing.assert_array_equal(bank.samples[old.offset : old.offset + 5], np.full(5, 1))
    np.testing.assert_array_equal(bank.samples[other.offset : other.offset + 3], np.full(3, 2))
    assert bank.names == ["busy", "dial"]


def test_samples_are_stored_as_int16() -> None:
    bank = SoundBank()
    sound = bank.add("wide", np.array([0, 1000, -32768, 32767], dtype=np.int64), loop=True)
    assert bank.samples.dtype == np.int16
    assert list(bank.samples[sound.offset : sound.offset + 4]) == [0, 1000, -32768, 32767]


def test_rewrite_reuses_a_names_region_so_per_call_sounds_do_not_grow_the_bank() -> None:
    bank = SoundBank()
    bank.add("dial", np.ones(100, dtype=np.int16), loop=True)
    first = bank.rewrite("spill", np.full(300, 7, dtype=np.int16), loop=False, capacity=1000)
    bank.discard("spill")  # dropped after play, as a port does
    size = bank.samples.size
    for value in range(50):
        sound = bank.rewrite("spill", np.full(200 + value, value, dtype=np.int16), loop=False)
        assert sound.offset == first.offset
    assert bank.samples.size == size, "the bank did not grow"
    assert (bank.samples_of("spill") == 49).all() and bank.samples_of("spill").size == 249
    assert (bank.samples_of("dial") == 1).all(), "other sounds untouched"
    bigger = bank.rewrite("spill", np.full(2000, 3, dtype=np.int16), loop=False)
    assert bigger.offset >= size and (bank.samples_of("spill") == 3).all(), "too big: appended"
