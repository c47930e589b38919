"""The floor: device vocabulary, located user errors, sRGB, atomic writes, instance boundaries."""

from __future__ import annotations

import numpy as np
import pytest

from sceneforge.floor.colour import linear_to_srgb8, srgb_to_linear
from sceneforge.floor.devices import Device, parse_device
from sceneforge.floor.errors import SourcePosition, UserError
from sceneforge.floor.files import atomic_write
from sceneforge.floor.frame import instance_boundaries


@pytest.mark.parametrize(("text", "device"), [("cpu", Device("cpu")), ("gpu", Device("gpu")), ("GPU:3", Device("gpu", 3)),
                                              ("auto", Device("auto"))])
def test_device_words(text, device):
    assert parse_device(text) == device and str(device) == text.lower()


@pytest.mark.parametrize("text", ["cuda", "cpu:0", "auto:1", "gpu:-1", "tpu", ""])
def test_other_device_words_are_user_errors_naming_the_option(text):
    with pytest.raises(UserError, match=r"^refine\.device: expected cpu, gpu"):
        parse_device(text, "refine.device")


def test_a_user_error_starts_with_where_the_mistake_is():
    error = UserError("expected a number", source=SourcePosition("r.yaml", 3, 7, "camera.distance"))
    assert str(error) == "r.yaml:3:7: camera.distance: expected a number"
    listing = UserError.listing([(SourcePosition("command line", field="count"), "too big"),
                                 (SourcePosition("r.yaml", 1, 1), "empty")])
    assert str(listing) == "command line: count: too big\nr.yaml:1:1: empty"
    assert [s.line for s in listing.sources] == [None, 1]


def test_srgb_curve_matches_its_definition_and_round_trips_8_bit_values():
    # IEC 61966-2-1: the linear segment below 0.04045, the 2.4 power above; 0.5 encodes 0.214041.
    assert srgb_to_linear(0.5) == pytest.approx(0.2140411, abs=1e-7)
    assert srgb_to_linear(0.04) == pytest.approx(0.04 / 12.92)
    levels = np.arange(256) / 255
    np.testing.assert_array_equal(linear_to_srgb8(srgb_to_linear(levels)), np.arange(256))
    assert linear_to_srgb8(np.array([-1.0, 2.0])).tolist() == [0, 255]


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write(path, lambda tmp: tmp.write_text("old"))

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, fail)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_instance_boundaries_mark_both_sides_of_each_id_change():
    ids = np.zeros((2, 4, 5), np.uint16)
    ids[1, 1:3, 1:3] = 7  # a 2 x 2 square in the second map
    edges = instance_boundaries(ids)
    assert not edges[0].any()
    expected = np.zeros((4, 5), bool)
    expected[0:4, 1:3] = expected[1:3, 0:4] = True  # the square and its 4-neighbours
    np.testing.assert_array_equal(edges[1], expected)
