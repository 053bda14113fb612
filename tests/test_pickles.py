"""CrystaLLM ``.pkl.gz`` CIF collections, read through a restricted unpickler."""

from __future__ import annotations

import gzip
import os
import pickle

import pytest

from crystalforge.cif.io import iter_cifs
from crystalforge.data.pickles import load_plain_pickle, read_cif_pickle
from crystalforge.errors import DataError


def _write(path, obj, compress=True):
    data = pickle.dumps(obj, protocol=4)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def test_reads_id_cif_pairs(tmp_path, perov_raw):
    path = _write(tmp_path / "cifs.pkl.gz", list(perov_raw[:5]))
    assert list(read_cif_pickle(path)) == list(perov_raw[:5])
    assert list(iter_cifs(path)) == list(perov_raw[:5])  # the io layer dispatches here


def test_plain_pickle_and_bare_strings(tmp_path):
    path = _write(tmp_path / "cifs.pkl", ["data_A\n", ("b", "data_B\n")], compress=False)
    assert list(read_cif_pickle(path)) == [("row000000", "data_A\n"), ("b", "data_B\n")]


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [[("id", Evil())], {"a": 1}.items, [("id", "x")] + [set()]],
                         ids=["reduce-os-system", "builtin-method", "set"])
def test_refuses_anything_but_plain_data(tmp_path, payload):
    try:
        obj = payload() if callable(payload) else payload
        data = pickle.dumps(obj, protocol=4)
    except Exception:  # some payloads are not picklable at all: not what we test
        data = pickle.dumps([("id", Evil())], protocol=4)
    path = tmp_path / "evil.pkl.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DataError) as info:
        list(read_cif_pickle(path))
    assert "\n" not in str(info.value)


def test_refusal_message_names_the_class(tmp_path):
    path = _write(tmp_path / "evil.pkl.gz", [("id", Evil())])
    with pytest.raises(DataError, match="refusing to unpickle posix.system"):
        list(read_cif_pickle(path))


@pytest.mark.parametrize(
    "content, message",
    [(b"\x1f\x8b\x08garbage", "corrupt gzip"), (b"not a pickle", "not a readable pickle"),
     (pickle.dumps("just a string"), "expected a list"), (pickle.dumps([("a", 1)]), "entry 0")],
    ids=["gzip", "pickle", "not-a-list", "bad-entry"],
)
def test_malformed_files(tmp_path, content, message):
    path = tmp_path / "bad.pkl.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        list(read_cif_pickle(path))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read file"):
        list(read_cif_pickle(tmp_path / "nope.pkl.gz"))


def test_load_plain_pickle_round_trip():
    obj = [("a", "b"), ("c", "d")]
    assert load_plain_pickle(pickle.dumps(obj)) == obj
