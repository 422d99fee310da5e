"""``converters.READERS`` lists every registered layout, including one registered after import."""
import dataclasses

import converters
from converters import formats


def test_readers_lists_a_layout_registered_later():
    extra = dataclasses.replace(formats.LAYOUTS[0], name="test-late-layout")
    formats.register_layout(extra)
    try:
        assert "test-late-layout" in converters.READERS
        assert converters.READERS == [lay.name for lay in formats.LAYOUTS]
    finally:
        formats.LAYOUTS.remove(extra)
        del formats.BY_NAME["test-late-layout"]
    assert "test-late-layout" not in converters.READERS
