"""Ready aggregates the other conditions and carries the first failing reason."""

from __future__ import annotations

from connectors.api.conditions import ConditionType, Reason, Status
from connectors.reconcile import evaluate
from connectors.reconcile.evaluate import ProbeOutcome
from connectors.registry.access import CredentialsProblem


def test_ready_is_true_only_when_every_dependency_is():
    healthy = (
        evaluate.class_condition("pypi", True),
        evaluate.secret_condition(None),
        evaluate.liveness_condition(ProbeOutcome(url="u", status=401)),
        evaluate.auth_condition(ProbeOutcome(url="u", status=200)),
        evaluate.proxy_condition("http://proxy", ""),
        evaluate.ca_condition(None),
    )
    assert evaluate.ready_condition(healthy).status is Status.TRUE
    # The proxy refuses a connector whose CA bundle is missing, so Ready must say so.
    missing_ca = CredentialsProblem(Reason.CA_CERT_NOT_FOUND, "secret registry-ca not found")
    failing = (
        evaluate.class_condition("pypi", False),
        evaluate.not_checked(ConditionType.SECRET_READY, "no Secret"),
        evaluate.liveness_condition(ProbeOutcome(url="u", status=503)),
        evaluate.auth_condition(ProbeOutcome(url="u", status=401)),
        evaluate.proxy_condition(None, "no proxy"),
        evaluate.ca_condition(missing_ca),
    )
    for index, broken in enumerate(failing):
        one_broken = (*healthy[:index], broken, *healthy[index + 1 :])
        ready = evaluate.ready_condition(one_broken)
        assert (ready.status, ready.reason) == (Status.FALSE, broken.reason), broken.type


def test_ready_carries_the_first_failing_reason_in_dependency_order():
    conditions = (
        evaluate.proxy_condition(None, "no proxy"),
        evaluate.auth_condition(ProbeOutcome(url="u", status=401)),
        evaluate.class_condition("pypi", True),
    )
    ready = evaluate.ready_condition(conditions)
    assert (ready.type, ready.status, ready.reason) == (
        ConditionType.READY,
        Status.FALSE,
        Reason.AUTHENTICATION_FAILED,
    )


def test_an_unreachable_registry_is_connection_failed_and_names_the_url():
    cond = evaluate.liveness_condition(ProbeOutcome(url="http://r/simple/", error="refused"))
    assert (cond.status, cond.reason) == (Status.FALSE, Reason.CONNECTION_FAILED)
    assert "http://r/simple/" in cond.message


def test_a_server_error_counts_as_not_live_but_a_challenge_does():
    assert not evaluate.liveness_condition(ProbeOutcome(url="u", status=503)).is_true
    assert evaluate.liveness_condition(ProbeOutcome(url="u", status=401)).is_true


def test_an_empty_upload_judges_credentials_where_reading_needs_none():
    def judged(status: int | None) -> tuple[Status, str]:
        check = ProbeOutcome(url="http://r/", status=status, error="" if status else "refused")
        cond = evaluate.upload_check_condition("http://r/simple/", check)
        return cond.status, cond.reason

    for accepted in (400, 409, 415, 422):  # refused the missing file, after the password
        assert judged(accepted) == (Status.TRUE, "")
    assert judged(401) == (Status.FALSE, Reason.AUTHENTICATION_FAILED)
    # 403 is a wrong password to pypiserver but a user without upload rights to devpi, and
    # a rate limit or a WAF proves nothing: none may hold back a connector that installs.
    for inconclusive in (403, 404, 405, 408, 413, 429, 500, None):
        assert judged(inconclusive) == (Status.UNKNOWN, Reason.ANONYMOUS_READ)


def test_a_condition_quotes_no_userinfo_query_or_fragment_of_an_address():
    secretive = "https://user:pw@registry.example:8443/simple/?token=SECRET#frag"
    cond = evaluate.liveness_condition(ProbeOutcome(url=secretive, error="refused"))
    assert "https://registry.example:8443/simple/" in cond.message
    assert not any(word in cond.message for word in ("user", "pw@", "SECRET", "frag"))


def test_ready_does_not_wait_for_credentials_nothing_could_check_but_does_for_others():
    unverified = evaluate.upload_check_condition(
        "http://r/simple/", ProbeOutcome(url="http://r/", status=405)
    )
    others = (evaluate.class_condition("pypi", True), evaluate.proxy_condition("http://p", ""))
    assert evaluate.ready_condition((*others, unverified)).status is Status.TRUE
    not_checked = evaluate.not_checked(ConditionType.AUTH_READY, "no usable Secret")
    assert evaluate.ready_condition((*others, not_checked)).status is Status.FALSE
