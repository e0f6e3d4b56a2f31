import pytest

from bot.runtime.approvals import ApprovalBook, ApprovalError, Kind, State
from bot.runtime.policy import Principal

ALICE = Principal("a" * 26, "alice")
BOB = Principal("b" * 26, "bob")
DAVE = Principal("d" * 26, "dave")


def approvers(who, action):
    return who.username == "dave"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def book(clock):
    return ApprovalBook(clock)


def open_approval(book, ttl=900):
    return book.open(Kind.APPROVAL, "db.drop", {"db": "x"}, "digest-1", ALICE, ttl)


def test_approval_by_an_approver_binds_the_digest(book):
    request = open_approval(book)
    assert request.id.startswith("R-") and len(request.id) == 7
    decided = book.decide(request.id.lower(), DAVE, True, approvers)
    assert decided.state is State.GRANTED and decided.decided_by == DAVE
    book.check_binding(decided, "digest-1")
    with pytest.raises(ApprovalError, match="different arguments"):
        book.check_binding(decided, "digest-2")


def test_self_approval_and_non_approvers_are_refused(book):
    request = open_approval(book)
    with pytest.raises(ApprovalError, match="cannot approve your own"):
        book.decide(request.id, ALICE, True, approvers)
    with pytest.raises(ApprovalError, match=r"may not approve db\.drop"):
        book.decide(request.id, BOB, True, approvers)
    assert book.get(request.id).state is State.PENDING
    withdrawn = book.decide(request.id, ALICE, False, approvers)  # requester may withdraw
    assert withdrawn.state is State.REJECTED


def test_confirmation_only_by_the_requester(book):
    request = book.open(Kind.CONFIRMATION, "deploy", {}, "d", ALICE, 60)
    with pytest.raises(ApprovalError, match="only @alice can confirm"):
        book.decide(request.id, DAVE, True, approvers)
    assert book.decide(request.id, ALICE, True, approvers).state is State.GRANTED


def test_requests_expire(book, clock):
    first, second = open_approval(book, ttl=60), open_approval(book, ttl=600)
    clock.now += 61
    with pytest.raises(ApprovalError, match="expired"):
        book.decide(first.id, DAVE, True, approvers)
    assert [r.id for r in book.expire()] == [first.id]
    assert book.expire() == []  # reported once
    clock.now += 600
    assert [r.id for r in book.expire()] == [second.id]
    assert book.pending() == []


def test_decisions_are_final_and_unknown_ids_named(book):
    request = open_approval(book)
    book.decide(request.id, DAVE, False, approvers)
    with pytest.raises(ApprovalError, match=f"request {request.id} was already rejected by @dave"):
        book.decide(request.id, DAVE, True, approvers)
    with pytest.raises(ApprovalError, match="no request R-NOPE"):
        book.decide("R-NOPE", DAVE, True, approvers)


def test_lookup_by_request_post(book):
    request = open_approval(book)
    request.post_id = "p" * 26
    assert book.by_post("p" * 26) is request
    assert book.by_post("q" * 26) is None


def test_a_late_decision_is_told_who_decided_within_the_hour(book, clock):
    granted = open_approval(book)
    book.decide(granted.id, DAVE, True, approvers)
    clock.now += 3599
    book.open(Kind.CONFIRMATION, "deploy", {}, "d", ALICE, 60)  # the book is in use
    with pytest.raises(ApprovalError, match=f"{granted.id} was already granted by @dave"):
        book.decide(granted.id, BOB, True, approvers)
    assert book.get(granted.id) is granted


def test_decided_and_expired_requests_are_forgotten_after_an_hour(book, clock):
    granted, expiring = open_approval(book), open_approval(book, ttl=60)
    granted.post_id = "p" * 26
    book.decide(granted.id, DAVE, True, approvers)
    clock.now += 61
    assert book.expire() == [expiring]
    with pytest.raises(ApprovalError, match=f"request {expiring.id} expired; ask again"):
        book.decide(expiring.id, DAVE, True, approvers)
    clock.now += 3600
    book.expire()  # the periodic sweep
    assert book.get(granted.id) is None and book.get(expiring.id) is None
    assert book.by_post("p" * 26) is None
    with pytest.raises(ApprovalError, match=f"no request {granted.id}"):
        book.decide(granted.id, DAVE, True, approvers)


def test_pending_requests_are_kept_however_old_until_they_expire(book, clock):
    long_lived = open_approval(book, ttl=4 * 3600)
    clock.now += 3 * 3600
    book.open(Kind.CONFIRMATION, "deploy", {}, "d", ALICE, 60)
    assert book.expire() == []
    assert book.get(long_lived.id) is long_lived
    assert book.decide(long_lived.id, DAVE, True, approvers).state is State.GRANTED


def test_only_the_most_recent_decisions_are_kept(clock):
    book = ApprovalBook(clock, keep_max=3)
    requests = [open_approval(book) for _ in range(5)]
    for request in requests:
        book.decide(request.id, DAVE, False, approvers)
    assert [book.get(r.id) for r in requests] == [None, None, *requests[2:]]
