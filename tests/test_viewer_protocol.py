"""The viewer's WebSocket messages: validation of client messages and the binary frame layout."""
import json
import struct

import pytest

from featvis_fast.viewer.protocol import (
    MAX_MESSAGE_BYTES,
    ProtocolError,
    Request,
    decode_binary,
    encode_binary,
    parse_request,
)

HOVER = {"type": "hover", "seq": 3, "panel": 1, "image": "cat", "layer": "_blocks.3", "x": 10.5, "y": 2,
         "metric": "dot", "colormap": "gray", "stretch": [-1, 2.5], "channel": 7, "encoding": "index8"}


def test_a_full_hover_parses_to_every_field():
    req = parse_request(json.dumps(HOVER))
    assert req == Request("hover", 3, "cat", "_blocks.3", panel=1, x=10.5, y=2.0, metric="dot", colormap="gray",
                          stretch=(-1.0, 2.5), channel=7, encoding="index8")
    assert req.slot == ("hover", 1)


def test_defaults_and_the_other_types():
    req = parse_request(json.dumps({"type": "hover", "image": "a", "layer": "l", "x": 0, "y": 0}))
    assert (req.seq, req.panel, req.metric, req.colormap, req.stretch, req.channel, req.encoding) == \
        (0, 0, "cosine", "fire", "minmax", None, "rgba8")
    vec = parse_request(json.dumps({"type": "vector", "seq": 9, "image": "a", "layer": "l", "x": 1, "y": 2}))
    assert (vec.type, vec.seq, vec.x, vec.y, vec.slot) == ("vector", 9, 1.0, 2.0, ("vector", 0))
    lay = parse_request(json.dumps({"type": "layer", "image": "a", "layer": "l"}))
    assert (lay.type, lay.layer, lay.slot) == ("layer", "l", ("layer", 0))


@pytest.mark.parametrize("message,needle", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"type": "paint"}', "unknown message type 'paint'"),
    ('{"image": "a", "layer": "l"}', "unknown message type None"),
    ('{"type": "hover", "layer": "l", "x": 1, "y": 1}', "missing 'image'"),
    ('{"type": "hover", "image": "a", "x": 1, "y": 1}', "missing 'layer'"),
    ('{"type": "hover", "image": "a", "layer": "l", "y": 1}', "missing 'x'"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": NaN, "y": 1}', "'x' must be a finite number"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": Infinity}', "'y' must be a finite number"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": "1", "y": 1}', "'x' must be a finite number"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": true, "y": 1}', "'x' must be a finite number"),
    ('{"type": "hover", "image": 5, "layer": "l", "x": 1, "y": 1}', "'image' must be a str"),
    ('{"type": "hover", "seq": 1.5, "image": "a", "layer": "l", "x": 1, "y": 1}', "'seq' must be an integer"),
    ('{"type": "hover", "panel": 2, "image": "a", "layer": "l", "x": 1, "y": 1}', "'panel' must be 0 or 1"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "stretch": [2, 1]}', "lo < hi"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "stretch": "auto"}', "'stretch' must be"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "stretch": [0, NaN]}', "'stretch' must be"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "channel": "3"}', "'channel' must be an integer"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "metric": 3}', "'metric' must be a str"),
    ('{"type": "hover", "image": "a", "layer": "l", "x": 1, "y": 1, "encoding": "png"}', "'encoding' must be one of"),
])
def test_malformed_messages_name_the_problem(message, needle):
    with pytest.raises(ProtocolError, match=None) as info:
        parse_request(message)
    assert needle in str(info.value)


def test_binary_and_oversized_messages_are_refused():
    with pytest.raises(ProtocolError, match="binary messages are not accepted"):
        parse_request(b'{"type": "layer"}')
    big = json.dumps({**HOVER, "image": "x" * MAX_MESSAGE_BYTES})
    with pytest.raises(ProtocolError, match=f"larger than {MAX_MESSAGE_BYTES} bytes"):
        parse_request(big)


def test_binary_frames_round_trip():
    header = {"type": "frame", "seq": 4, "lo": -0.5}
    payload = bytes(range(256)) * 3
    message = encode_binary(header, payload[:100], payload[100:])
    (n,) = struct.unpack_from("<I", message)
    assert json.loads(message[4:4 + n]) == header
    assert decode_binary(message) == (header, payload)


def test_errors_carry_the_messages_seq_when_it_has_one():
    with pytest.raises(ProtocolError) as info:
        parse_request('{"type": "hover", "seq": 41, "image": "a", "layer": "l", "x": "far", "y": 1}')
    assert info.value.seq == 41
    for text in ('{"type": "hover", "seq": "41"}', '{"type": "nope", "seq": true}', "[]", "{"):
        with pytest.raises(ProtocolError) as info:
            parse_request(text)
        assert info.value.seq is None
