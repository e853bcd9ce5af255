from tillflow.masking import one_line


def test_one_line_masks_secrets_and_keeps_the_first_line():
    exc = ValueError("login failed for postgresql://bob:hunter22@db/x?password=abc&token=t0k\nsecond line s3cr3t")
    text = one_line(exc, ["s3cr3t", "hunter22"])
    assert text.startswith("ValueError: login failed")
    assert "hunter22" not in text and "password=abc" not in text and "t0k" not in text
    assert "second line" not in text


def test_one_line_cuts_long_messages():
    text = one_line("x" * 1000, limit=50)
    assert len(text) == 50 and text.endswith("…")
