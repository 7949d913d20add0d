"""What the proxy does with each registry answer, decided in one place: only a GET's 200
of a rewritable type is read as an index page, a 304 is answered from memory only for a
page the proxy asked about, and a page the registry no longer has (404, 410) retires what
it named. The same paths for real: tests/integration/test_file_cache.py and
test_link_layouts.py."""

from __future__ import annotations

import pytest

from connectors.proxy.forwarding import Answer, answer_kind


@pytest.mark.parametrize(
    ("method", "status", "rewritable", "remembered", "kind"),
    [
        ("GET", 200, True, False, Answer.PAGE),
        ("GET", 200, True, True, Answer.PAGE),  # changed since: read and rewritten again
        ("HEAD", 200, True, False, Answer.PASSED_ON),  # no body to rewrite
        ("GET", 200, False, False, Answer.PASSED_ON),  # a file, streamed
        ("GET", 206, True, False, Answer.PASSED_ON),  # a range is never a whole page
        ("GET", 304, True, True, Answer.REMEMBERED_PAGE),
        # The client's own conditional request: its 304 is for its copy, not the proxy's.
        ("GET", 304, False, False, Answer.PASSED_ON),
        ("GET", 404, False, False, Answer.GONE),
        ("GET", 410, False, True, Answer.GONE),
        ("POST", 404, False, False, Answer.PASSED_ON),
        ("POST", 200, True, False, Answer.PASSED_ON),  # an upload's answer is never rewritten
    ],
)
def test_each_answer_has_one_treatment(method, status, rewritable, remembered, kind):
    assert answer_kind(method, status, rewritable=rewritable, remembered=remembered) is kind
