"""Reading a safetensors file safely: a file that is not safetensors, is cut short or has a damaged header gets one
line naming the file, the problem and the fix (never safetensors' raw "header too large")."""

import json
import os
import struct

import pytest
import torch
from safetensors.torch import save_file

from cogniedit.safetensors_io import SafetensorsFileError, read_safetensors, read_safetensors_metadata


@pytest.fixture()
def good(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": torch.arange(16.0).reshape(4, 4), "b": torch.ones(3)}, str(path), metadata={"k": "v"})
    return path


def one_line_error(path, what="LoRA"):
    with pytest.raises(SafetensorsFileError) as info:
        read_safetensors(path, what)
    message = str(info.value)
    assert "\n" not in message and path.name in message and message.startswith(what), message
    assert str(path.parent) not in message  # the file's name, not the machine's path
    return message


def test_a_good_file_reads_with_its_metadata(good):
    tensors, metadata = read_safetensors(good, "LoRA")
    assert torch.equal(tensors["a"], torch.arange(16.0).reshape(4, 4)) and metadata == {"k": "v"}
    assert read_safetensors_metadata(good, "LoRA") == {"k": "v"}


def test_random_bytes_are_not_a_safetensors_file(tmp_path):
    path = tmp_path / "random.safetensors"
    path.write_bytes(os.urandom(4096))
    message = one_line_error(path)
    assert "is not a safetensors file" in message and "convert it to .safetensors" in message


@pytest.mark.parametrize("keep", [3, 30, -10])
def test_a_file_cut_short_is_truncated(good, tmp_path, keep):
    data = good.read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[:keep])
    message = one_line_error(path)
    assert "truncated" in message and "download or copy it again" in message


def test_extra_bytes_and_a_damaged_header(good, tmp_path):
    longer = tmp_path / "longer.safetensors"
    longer.write_bytes(good.read_bytes() + b"xx")
    assert "2 bytes after its tensors" in one_line_error(longer)
    header = json.dumps({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    bad_json = tmp_path / "bad_json.safetensors"
    bad_json.write_bytes(struct.pack("<Q", len(header)) + header[:-1] + b"!" + bytes(8))
    assert "damaged header" in one_line_error(bad_json, "focus weights")
    wrong_size = tmp_path / "wrong_size.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    wrong_size.write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    assert "not a valid safetensors file" in one_line_error(wrong_size)


def test_missing_file(tmp_path):
    message = one_line_error(tmp_path / "missing.safetensors")
    assert "does not exist" in message
