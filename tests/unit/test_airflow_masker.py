"""tillflow.airflow_masker: Airflow's secrets masker made linear, masking exactly what upstream masks."""

from __future__ import annotations

import importlib
import secrets
from urllib.parse import quote

import pytest
from tillflow import airflow_masker


@pytest.fixture(scope="module", params=airflow_masker._MODULES)
def masker_module(request):
    return importlib.import_module(request.param)


def test_upstream_code_is_the_one_the_patch_was_written_against(masker_module):
    # fails after an Airflow upgrade: re-check add_mask upstream, update the copy and UPSTREAM_SHA256
    assert airflow_masker.upstream_digest(masker_module.SecretsMasker) == airflow_masker.UPSTREAM_SHA256


def test_install_is_idempotent_and_patches_both_copies():
    first = airflow_masker.install()
    assert airflow_masker.install() == first == list(airflow_masker._MODULES)
    for name in airflow_masker._MODULES:
        cls = importlib.import_module(name).SecretsMasker
        assert cls.add_mask is airflow_masker._add_mask
        assert cls._tillflow_upstream_add_mask is not airflow_masker._add_mask


def _pair(module):
    """An upstream masker and a patched one, with the same settings."""
    airflow_masker.install()
    cls = module.SecretsMasker
    upstream, patched = cls(), cls()
    upstream.add_mask = cls._tillflow_upstream_add_mask.__get__(upstream)  # the original, on one instance
    return upstream, patched


def test_masks_exactly_what_upstream_masks(masker_module):
    upstream, patched = _pair(masker_module)
    values = [secrets.token_urlsafe(24) + "/+=&" for _ in range(3 * airflow_masker.CHUNK + 5)]
    for m in (upstream, patched):
        for v in values:
            m.add_mask(v)
            m.add_mask(quote(v))
        m.add_mask({"password": "dict-password-123", "host": "not-a-secret-host"})
        m.add_mask(["list-secret-0001", "list-secret-0002"])
        m.add_mask("")
        m.add_mask("ab")  # too short to mask
    assert upstream.patterns == patched.patterns
    assert len(patched.replacer) == len(patched.patterns)
    lines = [
        f"token {values[0]} and {quote(values[-1])} in one line",
        f"middle chunk {values[airflow_masker.CHUNK + 1]}",
        "password dict-password-123, host not-a-secret-host, ab, list-secret-0002",
        "nothing secret here",
        {"nested": [values[7], "plain"]},
    ]
    for line in lines:
        assert patched.redact(line) == upstream.redact(line)
    assert values[0] not in patched.redact(lines[0]) and "***" in patched.redact(lines[0])
    assert patched.redact(lines[3]) == lines[3]


def test_reset_and_masks_added_before_install_keep_working(masker_module):
    cls = masker_module.SecretsMasker
    m = cls()
    cls._tillflow_upstream_add_mask(m, "added-before-the-patch")  # a compiled alternation, as upstream leaves it
    m.add_mask("added-after-the-patch")
    assert m.redact("added-before-the-patch / added-after-the-patch") == "*** / ***"
    m.reset_masker()
    assert m.redact("added-after-the-patch") == "added-after-the-patch"
    m.add_mask("added-after-reset")
    assert m.redact("added-after-reset") == "***"


def test_chunked_replacer_seals_full_chunks():
    r = airflow_masker.ChunkedReplacer()
    assert not r
    words = [f"w{i:04d}x" for i in range(airflow_masker.CHUNK * 2 + 3)]
    for w in words:
        r.add(w)
    assert len(r) == len(words) and len(r._sealed) == 2 and len(r._open) == 3
    assert r.sub("*", " ".join(words)) == " ".join("*" * len(words))
    assert r.search("xx w0130x") is not None and r.search("none") is None
