import threading

from bot.mattermost.ledger import Ledger


def test_a_post_is_claimed_once_even_after_reopening(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ledger = Ledger(path)
    assert ledger.claim("p1", "c1", 1000, "command") is True
    assert ledger.claim("p1", "c1", 1000, "command") is False
    ledger.close()
    reopened = Ledger(path)
    assert reopened.claim("p1", "c1", 1000, "command") is False
    assert reopened.claim("p2", "c1", 1001, "command") is True


def test_watermark_only_moves_forward(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.watermark("c1") is None
    ledger.claim("p2", "c1", 2000, "message")
    ledger.claim("p1", "c1", 1000, "message")
    assert ledger.watermark("c1") == 2000


def test_concurrent_claims_of_the_same_post_let_exactly_one_win(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    wins = []
    barrier = threading.Barrier(16)

    def claim():
        barrier.wait()
        wins.append(ledger.claim("same", "c", 1, "command"))

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_state_round_trip(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite3")
    assert ledger.get_state("last_seen_ms") is None
    ledger.set_state("last_seen_ms", "5")
    ledger.set_state("last_seen_ms", "6")
    assert ledger.get_state("last_seen_ms") == "6"
