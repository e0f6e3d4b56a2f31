import logging

from bot.redaction import MASK, install


def test_secret_values_are_scrubbed_from_messages_args_and_tracebacks(caplog):
    logger = logging.getLogger("test.redaction")
    handler = logging.Handler()
    records = []
    handler.emit = lambda record: records.append(handler.format(record))
    logger.addHandler(handler)
    install(["tok-123456"], logger)
    logger.error("token is %s", "tok-123456")
    try:
        raise RuntimeError("bad tok-123456")
    except RuntimeError:
        logger.exception("failed")
    logger.removeHandler(handler)
    text = "\n".join(records)
    assert "tok-123456" not in text
    assert text.count(MASK) >= 2
